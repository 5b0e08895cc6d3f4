//! Temporary stand-in for the configuration module (being written).
use std::time::Duration;
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Expect {
    #[default]
    Auto,
    Foreground,
    Fork,
    Daemon,
    Notify,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Restart {
    No,
    #[default]
    OnFailure,
    Always,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartLimit {
    pub burst: u32,
    pub interval: Duration,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signal(i32);
impl Signal {
    pub const TERM: Signal = Signal(15);
    pub const HUP: Signal = Signal(1);
    pub const KILL: Signal = Signal(9);
    pub fn new(n: i32) -> Option<Self> {
        (1..=64).contains(&n).then_some(Signal(n))
    }
    pub fn number(self) -> i32 {
        self.0
    }
}
