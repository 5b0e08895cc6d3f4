//! The invocation id: a new name for each start of a service, given to
//! its processes in `ADOPTD_INVOCATION_ID` (as systemd's `INVOCATION_ID`).
//! Every process forked from the service inherits it, so the `procfs`
//! source can tell which run a newcomer belongs to even after it left the
//! service's session.

/// The environment variable that carries a run's [`InvocationId`].
pub const INVOCATION_VARIABLE: &str = "ADOPTD_INVOCATION_ID";

/// Names one run of one service: 128 random bits, written as 32 lower-case
/// hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InvocationId(u128);

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
            Ok(16) => InvocationId(u128::from_ne_bytes(bytes)),
            _ => {
                static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                InvocationId(now ^ (u128::from(std::process::id()) << 64) ^ u128::from(count))
            }
        }
    }

    /// Reads the form [`Display`](std::fmt::Display) writes.
    pub fn parse(text: &[u8]) -> Option<Self> {
        if text.len() != 32 || !text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        u128::from_str_radix(text, 16).ok().map(InvocationId)
    }
}

impl Default for InvocationId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for InvocationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}
