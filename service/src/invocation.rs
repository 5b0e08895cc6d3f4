//! The invocation id: a new name for each start of a service, given to
//! its processes in `ADOPTD_INVOCATION_ID` (as systemd's `INVOCATION_ID`).
//! Every process forked from the service inherits it, so the `procfs`
//! source can tell which run a newcomer belongs to even after it left the
//! service's session.

/// The environment variable that carries a run's [`InvocationId`].
pub const INVOCATION_VARIABLE: &str = "ADOPTD_INVOCATION_ID";

/// Names one run of one service: 128 random bits, written as 32 lower-case
/// hex digits.
///
/// Kept as two `u64` (high, low) rather than a `u128`: aligned on 8 bytes,
/// not 16, an id costs no padding in the tables that hold one a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InvocationId([u64; 2]);

/// Written as its 32 hex digits (JSON has no 128-bit numbers).
impl serde::Serialize for InvocationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for InvocationId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        InvocationId::parse(text.as_bytes())
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an invocation id")))
    }
}

impl InvocationId {
    /// A new id from the kernel's random pool. Should that fail, the id
    /// is still unique to this adoptd (a counter, the clock and the pid),
    /// just guessable, which costs nothing but the procfs source's
    /// resistance to a service that forges another's id.
    pub fn new() -> Self {
        let mut bytes = [0u8; 16];
        match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
            Ok(16) => InvocationId::from_bits(u128::from_ne_bytes(bytes)),
            _ => {
                static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                InvocationId::from_bits(
                    now ^ (u128::from(std::process::id()) << 64) ^ u128::from(count),
                )
            }
        }
    }

    /// Reads the form [`Display`](std::fmt::Display) writes.
    pub fn parse(text: &[u8]) -> Option<Self> {
        if text.len() != 32 || !text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        u128::from_str_radix(text, 16)
            .ok()
            .map(InvocationId::from_bits)
    }
}

impl InvocationId {
    fn from_bits(bits: u128) -> Self {
        // The halves of a u128: the casts keep exactly 64 bits each.
        InvocationId([(bits >> 64) as u64, bits as u64])
    }

    fn bits(self) -> u128 {
        u128::from(self.0[0]) << 64 | u128::from(self.0[1])
    }
}

impl Default for InvocationId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for InvocationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_from_its_32_hex_digits() {
        let text = "0123456789abcdef00112233445566ff";
        let id = InvocationId::parse(text.as_bytes()).expect("an id");
        assert_eq!(id.to_string(), text);
        let new = InvocationId::new();
        assert_eq!(InvocationId::parse(new.to_string().as_bytes()), Some(new));
        assert_eq!(
            InvocationId::parse(b"0123456789ABCDEF00112233445566FF"),
            None
        );
        assert_eq!(InvocationId::parse(b"0123"), None);
    }
}
