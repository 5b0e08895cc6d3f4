//! Benchmark of DESIGN.md's budgets (not a test): memory per supervised
//! service, N services from start to all running, SIGKILL → restarted,
//! a hop's exit → `PropertiesChanged(MainPID)` at a subscriber, and
//! `adoptctl list` and adoptd's memory with 10,000 services.
//!
//! ```text
//! cargo build --release -p adoptd -p adoptctl -p dance
//! cargo run --release -p adoptd --example bench_budgets -- [OPTIONS] [MEASUREMENT...]
//! ```
//!
//! Measurements (default: all, in this order): `start`, `restart`,
//! `signal`, `many`, `reads`, `idle`, `status`. Options: `--services N` (1000), `--kills K` (200),
//! `--hops H` (300), `--many M` (10000), `--lists L` (5), `--idle` (the M
//! services of `many` are loaded but not started), `--tracker SOURCE`
//! (`auto`), `--output log|null` (the services' `output`, default `log`,
//! adoptd's own default), `--bus private|dbus-daemon` (each adoptd with
//! `--private-bus`, the default, or on a `dbus-daemon --session` of the
//! benchmark's own, started for it). It runs the adoptd, adoptctl and
//! dance binaries next to this example's directory (the release build),
//! logging at `info`. Every figure is printed beside its budget; nothing
//! is asserted.
//!
//! The private bus of root is always `/run/adoptd/bus`, which another
//! adoptd (a test suite) may be using: as root, each adoptd runs in a mount
//! namespace of its own with a fresh tmpfs on `/run`, and the benchmark
//! reaches its socket through `/proc/PID/root/run/adoptd/bus`. Other users
//! get `$XDG_RUNTIME_DIR` in a scratch directory.
//!
//! `start`: adoptd with no service, then with N services, each `/bin/sleep
//! 100000` with `expect = "foreground"`. Start time = the log stamp of the
//! status line that makes the N-th service `running` − the realtime clock
//! just before adoptd is spawned (the log is stamped by tracing with the
//! realtime clock, in microseconds, when the line is made). Memory is read
//! from `/proc/PID/smaps_rollup` once every service runs and adoptd has
//! logged `published as org.adoptd1` (every object is on the bus then: the
//! bus task applies every update queued at start-up before it claims the
//! name). Per service = (N services − no service) / N, for Rss and for
//! Anonymous (adoptd's private heap and stacks; Rss also counts the pages
//! of the binary that the run touched). adoptd's private bus runs on a
//! thread of adoptd, so the broker's memory is counted in too. adoptd's
//! CPU time (utime + stime, all threads) when the last service runs tells
//! how much of the start time adoptd spent working rather than waiting.
//! Then the peers (s6's `s6-svscan`, runit's `runsvdir`, when installed)
//! over N service directories whose `run` script execs the same
//! `/bin/sleep`: from spawning the scanner to the moment every service's
//! process is `sleep` (polled every 5 ms), and adoptd's time as a ratio
//! to theirs. Then the floor: a C program the benchmark compiles that
//! vforks, setsids and execs the same N `/bin/sleep` on one thread a
//! core, with no output, from its spawn to its stamp once the last has
//! exec'd (what starting N programs costs this machine at least).
//!
//! `restart`: a service with `restart = "always"`, `restart-delay = "0"`
//! and a start limit it cannot reach (10,000 starts a second), whose
//! program (compiled by the benchmark, statically where it can) sends the
//! realtime clock as its `main` begins to a socket of the benchmark's,
//! then sleeps. K times: the realtime clock, then SIGKILL to its main
//! process; latency = the new process's stamp − that clock: the time
//! until the service runs again, whatever adoptd logs meanwhile. The
//! time to adoptd's `started` line is printed too (the measure of
//! earlier runs).
//! The next kill waits for the status line of the new main process, and
//! for the supervisor's threads to be asleep. After each of adoptd's
//! kills come one kill of each of two C loops that the benchmark compiles
//! with `cc`, so that all three are measured over the same stretch of a
//! noisy machine, each running the same program: a bare loop (vfork,
//! setsid, exec, print the pid, waitpid), the least a supervisor does;
//! and a loop
//! that does the kernel's share of what adoptd does for a restart (woken
//! by a signalfd in epoll, waitid, a pipe for stdout and one for stderr,
//! a pidfd, every signal blocked across the vfork and every action reset
//! in the child), the floor of a supervisor that keeps adoptd's promises;
//! each waits after its kills as adoptd's do. adoptd's median as a ratio
//! to each.
//!
//! `signal`: H hops in up to ten rounds of H / 10 (rounded up), one
//! service each that hops that many times (`fork setsid`, then `sleep:5
//! fork`) with `dance --hop-times`: each hop's parent writes its pid and
//! the realtime clock just before `_exit`. The benchmark
//! subscribes to the service object's `PropertiesChanged` (zbus, a
//! current-thread tokio runtime, as adoptctl monitor), starts the service,
//! and takes the realtime clock when each signal that carries `MainPID`
//! reaches it, until `MainPID` is the last hop (its pid comes in the
//! dance's report). Latency = arrival of the first signal whose `MainPID`
//! is the hop's heir or a later hop − the hop's exit time: hops that fall
//! in one moment of adoptd's are coalesced into one signal, which a
//! subscriber sees for all of them (the benchmark counts them). Then the
//! same dance under a floor the benchmark compiles with `cc`: a child
//! subreaper waiting in `epoll` on a signalfd that sends each reaped pid
//! in a datagram to the benchmark, which takes the clock as it arrives:
//! what this machine's kernel alone costs from a hop's exit to another
//! process hearing of it, and adoptd's median as a ratio to its. Then
//! the same floor with its datagrams passed through one relay process
//! (as a broker passes a signal from publisher to subscriber) and through
//! two (a publishing thread apart from the reaper, then a broker): what
//! the hops between processes cost, without the bus's encoding (each in
//! as many rounds, once adoptd has stopped). And, after each of adoptd's
//! rounds, a round of the floor on the bus (so that a noisy stretch falls
//! on both): the same subreaper says each reap itself as the
//! `PropertiesChanged(MainPID)` adoptd sends (written by hand on a raw
//! socket), through the broker adoptd used, to a zbus subscriber as
//! above: the least a supervisor bound to the D-Bus contract can take,
//! with no reaper's attribution, tokio or zbus of its own.
//!
//! `many`: M services (running `/bin/sleep`, as in `start`, if pid_max
//! leaves room, else or with `--idle` loaded with `autostart = false`).
//! adoptd's memory once all run and are on the bus, then L runs of
//! `adoptctl --address ADDR list` (stdout to /dev/null; wall time of the
//! whole process), then adoptd's memory and its peak (VmHWM), then one
//! `GetManagedObjects` (its size and time) and adoptd's memory after it.
//! adoptd holds a descriptor per running service (its pidfd), two with
//! `output = "log"` (and the pipe), and raises its soft RLIMIT_NOFILE to the hard
//! one: the benchmark raises the hard limit it passes on when it can (that
//! takes CAP_SYS_RESOURCE); when it cannot, the services' output is
//! `null`, or if even that does not fit they are not started. It says
//! which. CPU per list: adoptd's (which includes its private bus, so the
//! broker's routing of the reply) and adoptctl's (from RUSAGE_CHILDREN).
//!
//! `reads`: a service `crowd` of 1,001 processes (`dance workers:1000
//! serve`) beside the `victim` of `restart`. K kills of the victim as in
//! `restart` (kill → `started` line), then K more while 4 clients (each
//! its own connection, as root: reading is open to everyone and takes
//! the same path whoever asks) read the crowd's `PIDs` in a loop, one read
//! after the other. Printed: both medians and their ratio, the readers'
//! pace and adoptd's CPU (all threads) meanwhile.
//!
//! `idle`: 100 services (`/bin/sleep`) that do nothing, under adoptd with
//! `--tracker auto` and, as root, `--tracker proc-connector`, and under
//! the peers Debian packages when they are installed (`s6-svscan` with an
//! `s6-supervise` per service; runit's `runsvdir` with a `runsv` each).
//! The context switches (voluntary and not, every thread) of the
//! supervisor's own processes, not of the services, over 10 s once all
//! run: first on the machine as it is, then while this program starts
//! `/bin/true` 50 times a second (processes that belong to no supervisor).
//!
//! `status`: `adoptctl --address ADDR status web` as a whole process
//! (spawn to exit, output to /dev/null) over one running service, and in
//! turn with it `s6-svstat DIR` over one service of `s6-svscan`, 300 runs
//! each; both medians and their ratio. Then, in the same turns, the floor
//! of a status over the bus: a C client the benchmark compiles that asks
//! adoptd what `adoptctl status` asks, by hand on a raw socket (connect,
//! authenticate, then Hello, `GetAll` and `GetOutput` in one write) and
//! exits once both answers came; its median and adoptctl's as a ratio to
//! it, and the floor's as a ratio to `s6-svstat`'s. It says first
//! whether the adoptctl measured is linked statically, as `make` builds
//! and installs it, or dynamically, as a plain `cargo build` leaves it:
//! the second starts slower.
//!
//! Every adoptd is stopped with SIGTERM, and the benchmark waits for it to
//! exit. One that has not exited two minutes later is reported (its last
//! log lines, its threads' kernel stacks) and killed; this program is a
//! child subreaper, so the services such an adoptd leaves come to it, and
//! it kills them.

// A benchmark that cannot measure says why and stops.
#![allow(clippy::expect_used)]

#[path = "support/bus.rs"]
mod bus;
#[path = "support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bus::Bus;
use support::{binary, compile_c, compile_c_with, cores, cpu_model, parse_utc_micros, percentile};

use futures_util::StreamExt as _;

/// How long any one expected event may take.
const TIMEOUT: Duration = Duration::from_secs(120);
/// How many rounds `signal` splits its hops into, adoptd's and the floor's
/// taking turns.
const SIGNAL_ROUNDS: u32 = 10;

/// How long adoptd may take to stop its services and exit on SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

const USAGE: &str = "\
usage: bench_budgets [--services N] [--kills K] [--hops H] [--many M] [--lists L]
                     [--idle] [--tracker SOURCE] [--output log|null]
                     [--bus private|dbus-daemon]
                     [start|restart|signal|many|reads|idle|status]...";

fn main() {
    let options = Options::parse();
    // The services of an adoptd that must be killed come to this program,
    // which then ends them (see `kill_orphans`), instead of to init.
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    println!(
        "machine: {}, {} cores; tracker {}, services' output {}, bus {}",
        cpu_model(),
        cores(),
        options.tracker,
        options.output,
        if options.dbus_daemon {
            "dbus-daemon"
        } else {
            "private"
        },
    );
    for measurement in &options.measurements {
        match measurement {
            Measurement::Start => start(&options),
            Measurement::Restart => restart(&options),
            Measurement::Signal => signal(&options),
            Measurement::Many => many(&options),
            Measurement::Reads => reads(&options),
            Measurement::Idle => idle(&options),
            Measurement::Status => status(&options),
        }
    }
}

#[derive(Clone)]
struct Options {
    services: u32,
    kills: u32,
    hops: u32,
    many: u32,
    lists: u32,
    idle: bool,
    tracker: String,
    output: String,
    /// adoptd's bus: its own private bus, or a `dbus-daemon`.
    dbus_daemon: bool,
    measurements: Vec<Measurement>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Measurement {
    Start,
    Restart,
    Signal,
    Many,
    Reads,
    Idle,
    Status,
}

impl Options {
    fn parse() -> Self {
        let mut options = Options {
            services: 1000,
            kills: 200,
            hops: 300,
            many: 10_000,
            lists: 5,
            idle: false,
            tracker: "auto".to_owned(),
            output: "log".to_owned(),
            dbus_daemon: false,
            measurements: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--services" => options.services = number(&arg, args.next()),
                "--kills" => options.kills = number(&arg, args.next()),
                "--hops" => options.hops = number(&arg, args.next()),
                "--many" => options.many = number(&arg, args.next()),
                "--lists" => options.lists = number(&arg, args.next()),
                "--idle" => options.idle = true,
                "--tracker" => options.tracker = args.next().unwrap_or_else(|| usage()),
                "--output" => match args.next().as_deref() {
                    Some(mode @ ("log" | "null")) => options.output = mode.to_owned(),
                    _ => usage(),
                },
                "--bus" => match args.next().as_deref() {
                    Some("private") => options.dbus_daemon = false,
                    Some("dbus-daemon") => options.dbus_daemon = true,
                    _ => usage(),
                },
                "start" => options.measurements.push(Measurement::Start),
                "restart" => options.measurements.push(Measurement::Restart),
                "signal" => options.measurements.push(Measurement::Signal),
                "many" => options.measurements.push(Measurement::Many),
                "reads" => options.measurements.push(Measurement::Reads),
                "idle" => options.measurements.push(Measurement::Idle),
                "status" => options.measurements.push(Measurement::Status),
                _ => usage(),
            }
        }
        if options.measurements.is_empty() {
            options.measurements = vec![
                Measurement::Start,
                Measurement::Restart,
                Measurement::Signal,
                Measurement::Many,
                Measurement::Reads,
                Measurement::Idle,
                Measurement::Status,
            ];
        }
        options
    }
}

fn number(option: &str, arg: Option<String>) -> u32 {
    arg.and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        eprintln!("{option} takes a number");
        usage()
    })
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2)
}

/// Memory per service and N services from start to all running.
fn start(options: &Options) {
    let empty = Scratch::new("empty");
    let mut adoptd = Adoptd::start(&empty, options);
    adoptd.wait_published();
    let base = Memory::of(adoptd.pid());
    let base_published = adoptd.published_after_ms();
    adoptd.stop();

    let n = options.services;
    room_for_descriptors(u64::from(n) * descriptors_per_service(&options.output) + 1024);
    let scratch = Scratch::new("start");
    for index in 0..n {
        scratch.service(&format!("s{index:05}"), &sleeper(&options.output, ""));
    }
    let mut adoptd = Adoptd::start(&scratch, options);
    let running_at = adoptd.wait_all_running(n as usize);
    let cpu = cpu_ms(adoptd.pid());
    adoptd.wait_published();
    let loaded = Memory::of(adoptd.pid());
    let published = adoptd.published_after_ms();
    let spawned_at = adoptd.spawned_at;
    adoptd.stop();

    println!(
        "start: {n} services running {:.0} ms after adoptd was spawned (budget ≤ 500 ms for 1000), \
         adoptd's CPU by then {cpu} ms; all on the bus after {published:.0} ms (no service: \
         {base_published:.0} ms)",
        (running_at - spawned_at) as f64 / 1000.0,
    );
    println!("memory: no service: {base}");
    println!("memory: {n} services: {loaded}");
    let adoptd_ms = (running_at - spawned_at) as f64 / 1000.0;
    for (name, scanner) in PEERS {
        let Some(peer) = Peer::start(name, scanner, n) else {
            println!("start: {name} is not installed (apt-get install {name}), not measured");
            continue;
        };
        let running_at = peer.wait_all_running();
        let spawned_at = peer.spawned_at;
        peer.stop();
        let Some(running_at) = running_at else {
            println!("start: {name} is not compared");
            continue;
        };
        let peer_ms = (running_at - spawned_at) as f64 / 1000.0;
        println!(
            "start: {name}: {n} services running {peer_ms:.0} ms after its scanner was spawned \
             (polled every 5 ms); adoptd / {name} = {:.2}",
            adoptd_ms / peer_ms
        );
    }
    match floor_start(&scratch, n) {
        Ok(floor_ms) => println!(
            "start: floor (a C program vforking {n} /bin/sleep on {} threads, one a core; \
             stamp once the last has exec'd): {floor_ms:.0} ms; adoptd / floor = {:.2}",
            cores(),
            adoptd_ms / floor_ms
        ),
        Err(problem) => println!("start: the floor is not measured: {problem}"),
    }
    let per_service =
        |after: u64, before: u64| (after as f64 - before as f64) * 1024.0 / f64::from(n.max(1));
    println!(
        "memory: per service: Rss {:.0} B, Anonymous {:.0} B, Pss {:.0} B (budget ≤ 2560 B)",
        per_service(loaded.rss_kb, base.rss_kb),
        per_service(loaded.anonymous_kb, base.anonymous_kb),
        per_service(loaded.pss_kb, base.pss_kb),
    );
}

/// SIGKILL → the new main process runs, with `restart-delay = "0"`;
/// each kill of adoptd's service is followed by one of each C loop's
/// child, so that all three are measured over the same stretch of time.
fn restart(options: &Options) {
    let scratch = Scratch::new("restart");
    let stamps = match Stamps::open(&scratch) {
        Ok(stamps) => stamps,
        Err(problem) => {
            println!("restart: not measured: {problem}");
            return;
        }
    };
    scratch.service(
        "victim",
        &format!(
            "exec = [{:?}, {:?}]\nexpect = \"foreground\"\noutput = \"{}\"\n\
             restart = \"always\"\nrestart-delay = \"0\"\n\
             start-limit = {{ burst = 10000, interval = \"1s\" }}\n",
            stamps.program.display().to_string(),
            stamps.path.display().to_string(),
            options.output,
        ),
    );
    let mut loops = [
        LoopRun::start(
            &scratch,
            &stamps,
            (BARE_LOOP, "bare-loop"),
            "a bare C loop (vfork, exec, waitpid)",
            Some(1.3),
        ),
        LoopRun::start(
            &scratch,
            &stamps,
            (SAME_WORK_LOOP, "same-work-loop"),
            "a C loop doing adoptd's kernel work (signalfd in epoll, waitid, two pipes, \
             a pidfd, every signal blocked, then reset in the child)",
            None,
        ),
    ];
    let mut adoptd = Adoptd::start(&scratch, options);
    adoptd.wait_published();
    let mut pid = adoptd.wait_main_pid("victim", None);
    stamps
        .next_of(pid)
        .expect("the victim's first process says it runs");
    let mut total = Vec::new();
    let mut to_started_line = Vec::new();
    for _ in 0..options.kills {
        let killed_at = now_us();
        send_signal(pid, libc::SIGKILL);
        let started = adoptd.wait_line("the victim started again", |line| {
            line.contains(" started ") && field(line, "service") == Some("victim")
        });
        let new_pid = field(&started, "pid")
            .and_then(|p| p.parse().ok())
            .expect("a pid in the started line");
        let runs_at = stamps
            .next_of(new_pid)
            .expect("the victim's new process says it runs");
        let Some(started_at) = log_stamp(&started) else {
            panic!("a log line without a time stamp: {started:?}");
        };
        total.push(runs_at - killed_at);
        to_started_line.push(started_at - killed_at);
        pid = adoptd.wait_main_pid("victim", Some(new_pid));
        // Each restart's tail (adoptd's record and bus traffic) is over
        // before the next kill, whoever's it is.
        settle(adoptd.child.id(), pid);
        for run in &mut loops {
            run.kill_and_restart(&stamps);
        }
    }
    adoptd.stop();
    for list in [&mut total, &mut to_started_line] {
        list.sort_unstable();
    }
    println!(
        "restart: SIGKILL → the new process runs, over {} kills: median {} µs, p99 {} µs, \
         max {} µs (budget ≤ 1000 µs median)",
        total.len(),
        percentile(&total, 50),
        percentile(&total, 99),
        total.last().copied().unwrap_or(0),
    );
    println!(
        "restart: kill → adoptd's `started` line median {} µs (p99 {} µs)",
        percentile(&to_started_line, 50),
        percentile(&to_started_line, 99),
    );
    let adoptd_median = percentile(&total, 50);
    for run in loops {
        run.report(adoptd_median);
    }
}

/// What every supervisor of `restart` runs as its service, where the
/// machine is an x86-64: it sends `PID STAMP` (the realtime clock, µs, as
/// its first work) to the datagram socket its first argument names, then
/// sleeps until killed. Without the C library, whose start-up (probing
/// the CPU, which a virtual machine answers slowly) would add a third of
/// a millisecond to every supervisor's figure alike and so hide how they
/// differ.
const STAMP_PROGRAM_BARE: &str = r#"
#if defined(__x86_64__)
/* No C library: the stamp is the program's first work after the exec. */
static long sys(long n, long a, long b, long c, long d, long e, long f) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}
struct timespec_ { long sec, nsec; };
struct sockaddr_un_ { unsigned short family; char path[108]; };
__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call begin\n hlt\n");
static char *decimal(char *end, long value) {
    do { *--end = (char)('0' + value % 10); value /= 10; } while (value);
    return end;
}
__attribute__((used)) void begin(long *stack) {
    struct timespec_ now;
    sys(228 /* clock_gettime */, 0 /* CLOCK_REALTIME */, (long)&now, 0, 0, 0, 0);
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    if (argc < 2)
        sys(60 /* exit */, 2, 0, 0, 0, 0, 0);
    struct sockaddr_un_ to = {1 /* AF_UNIX */, {0}};
    for (int i = 0; i < 107 && argv[1][i]; i++)
        to.path[i] = argv[1][i];
    char text[64];
    char *end = text + sizeof text;
    char *start = decimal(end, now.sec * 1000000 + now.nsec / 1000);
    *--start = ' ';
    start = decimal(start, sys(39 /* getpid */, 0, 0, 0, 0, 0, 0));
    long fd = sys(41 /* socket */, 1, 2 /* SOCK_DGRAM */ | 02000000 /* SOCK_CLOEXEC */, 0, 0, 0, 0);
    sys(44 /* sendto */, fd, (long)start, end - start, 0, (long)&to, sizeof to);
    for (;;)
        sys(34 /* pause */, 0, 0, 0, 0, 0, 0);
}
#else
#error "x86-64 only: the benchmark falls back to the C library's version"
#endif
"#;

/// [`STAMP_PROGRAM_BARE`] with the C library, elsewhere.
const STAMP_PROGRAM: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (argc < 2)
        return 2;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un to = {.sun_family = AF_UNIX};
    strncpy(to.sun_path, argv[1], sizeof to.sun_path - 1);
    char text[64];
    int n = snprintf(text, sizeof text, "%d %lld", (int)getpid(),
                     (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000);
    sendto(fd, text, n, 0, (struct sockaddr *)&to, sizeof to);
    close(fd);
    for (;;)
        pause();
}
"#;

/// The socket the new processes of `restart` say on that they run, and
/// the program they run.
struct Stamps {
    socket: std::os::unix::net::UnixDatagram,
    path: PathBuf,
    program: PathBuf,
}

impl Stamps {
    fn open(scratch: &Scratch) -> Result<Self, String> {
        let bare = [
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-stack-protector",
        ];
        let (program, kind) = compile_c_with(STAMP_PROGRAM_BARE, &scratch.path, "stamp", &bare)
            .map(|program| (program, "without the C library"))
            .or_else(|_| {
                compile_c_with(STAMP_PROGRAM, &scratch.path, "stamp", &["-static"])
                    .map(|program| (program, "linked statically"))
            })
            .or_else(|_| {
                compile_c(STAMP_PROGRAM, &scratch.path, "stamp")
                    .map(|program| (program, "linked dynamically"))
            })?;
        println!("restart: the services' program reports when it runs, {kind}");
        let path = scratch.path.join("stamps.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        Ok(Stamps {
            socket,
            path,
            program,
        })
    }

    /// The stamp of process `pid`: the next one said, which must be its.
    fn next_of(&self, pid: u32) -> Option<i64> {
        let mut buffer = [0u8; 64];
        let n = self.socket.recv(&mut buffer).ok()?;
        let text = std::str::from_utf8(&buffer[..n]).ok()?;
        let (said_pid, at) = text.split_once(' ')?;
        (said_pid.parse::<u32>().ok()? == pid).then(|| at.parse().ok())?
    }
}

/// Waits (100 ms at most) until every thread of `supervisor` and the
/// service process `service` are asleep: a restart's tail is done.
fn settle(supervisor: u32, service: u32) {
    let asleep = |stat: &std::path::Path| {
        std::fs::read_to_string(stat).map_or(true, |text| {
            // The state follows the command's closing parenthesis.
            text.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with(['S', 'I']))
        })
    };
    let deadline = Instant::now() + Duration::from_millis(100);
    while Instant::now() < deadline {
        let service_asleep = asleep(Path::new(&format!("/proc/{service}/stat")));
        let threads_asleep = std::fs::read_dir(format!("/proc/{supervisor}/task"))
            .map(|tasks| {
                tasks
                    .filter_map(Result::ok)
                    .all(|task| asleep(&task.path().join("stat")))
            })
            .unwrap_or(true);
        if service_asleep && threads_asleep {
            return;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// One C loop of the `restart` measurement and its latencies so far.
struct LoopRun {
    what: &'static str,
    /// The budget of adoptd's ratio to it, if it has one.
    budget: Option<f64>,
    running: Result<CLoop, String>,
    latencies: Vec<i64>,
}

impl LoopRun {
    fn start(
        scratch: &Scratch,
        stamps: &Stamps,
        (source, name): (&str, &str),
        what: &'static str,
        budget: Option<f64>,
    ) -> Self {
        LoopRun {
            what,
            budget,
            running: CLoop::start(scratch, stamps, source, name),
            latencies: Vec::new(),
        }
    }

    fn kill_and_restart(&mut self, stamps: &Stamps) {
        let Ok(running) = &mut self.running else {
            return;
        };
        match running.kill_and_restart(stamps) {
            Some(latency) => {
                self.latencies.push(latency);
                settle(running.looping.id(), running.pid);
            }
            None => self.running = Err("its new process did not say it runs".to_owned()),
        }
    }

    /// Prints its median and p99, and `adoptd_median` as a ratio to its
    /// median.
    fn report(mut self, adoptd_median: i64) {
        if let Err(problem) = &self.running {
            println!("restart: {} is not measured: {problem}", self.what);
            return;
        }
        self.latencies.sort_unstable();
        let median = percentile(&self.latencies, 50);
        let budget = self
            .budget
            .map(|budget| format!("; budget ≤ {budget}"))
            .unwrap_or_default();
        println!(
            "restart: {} over {} kills: median {median} µs, p99 {} µs; \
             adoptd / it = {:.2} (median{budget})",
            self.what,
            self.latencies.len(),
            percentile(&self.latencies, 99),
            adoptd_median as f64 / median.max(1) as f64,
        );
    }
}

/// The least a supervisor can do to restart a killed service: wait for
/// it, vfork, exec the program its arguments name, and print the new
/// pid (and a stamp of its own, once the child has exec'd).
const BARE_LOOP: &str = r#"
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    char *args[] = {argv[1], argv[2], NULL};
    char *envp[] = {"PATH=/usr/bin:/bin", NULL};
    for (;;) {
        pid_t pid = vfork();
        if (pid == 0) {
            setsid();
            execve(args[0], args, envp);
            _exit(127);
        }
        if (pid < 0)
            return 1;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        printf("%d %lld\n", (int)pid, (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000);
        fflush(stdout);
        int status;
        while (waitpid(pid, &status, 0) != pid) {
        }
    }
}
"#;

/// The least a supervisor that keeps adoptd's promises does to restart a
/// killed service, in C: the kernel's share of adoptd's restart. It waits
/// in `epoll` on a signalfd for SIGCHLD and reaps with `waitid`, as adoptd's
/// reaper does; it gives the child a pipe for stdout and one for stderr and
/// holds it by a pidfd; the child is made with every signal blocked,
/// resets every signal action, becomes a session leader, takes its
/// descriptors and unblocks its signals just before its exec. It prints
/// as [`BARE_LOOP`] does, once the child has exec'd and the pidfd is held.
const SAME_WORK_LOOP: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    char *args[] = {argv[1], argv[2], NULL};
    char *envp[] = {"PATH=/usr/bin:/bin", NULL};
    sigset_t chld, all, old, none;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigfillset(&all);
    sigemptyset(&none);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int signals = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    int poll = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event event = {.events = EPOLLIN};
    epoll_ctl(poll, EPOLL_CTL_ADD, signals, &event);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (signals < 0 || poll < 0 || null < 0)
        return 1;
    for (;;) {
        int out[2], err[2];
        if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))
            return 1;
        sigprocmask(SIG_SETMASK, &all, &old);
        pid_t pid = vfork();
        if (pid == 0) {
            struct sigaction dfl = {.sa_handler = SIG_DFL};
            for (int s = 1; s < NSIG; s++)
                if (s != SIGKILL && s != SIGSTOP)
                    sigaction(s, &dfl, NULL);
            setsid();
            dup2(null, 0);
            dup2(out[1], 1);
            dup2(err[1], 2);
            sigprocmask(SIG_SETMASK, &none, NULL);
            execve(args[0], args, envp);
            _exit(127);
        }
        sigprocmask(SIG_SETMASK, &old, NULL);
        if (pid < 0)
            return 1;
        int pidfd = syscall(SYS_pidfd_open, pid, 0);
        close(out[1]);
        close(err[1]);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        printf("%d %lld\n", (int)pid, (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000);
        fflush(stdout);
        for (;;) {
            epoll_wait(poll, &event, 1, -1);
            struct signalfd_siginfo info;
            while (read(signals, &info, sizeof info) > 0) {
            }
            siginfo_t reaped = {0};
            if (waitid(P_PID, pid, &reaped, WEXITED | WNOHANG) == 0 && reaped.si_pid == pid)
                break;
        }
        close(pidfd);
        close(out[0]);
        close(err[0]);
    }
}
"#;

/// The least it takes this machine to start `N` programs: vfork, setsid
/// and exec of `/bin/sleep` with no output, on as many threads as asked;
/// prints the realtime clock once every child has exec'd, then kills them
/// all when its stdin ends.
const FLOOR_START: &str = r#"
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int n, next_index, null_fd;
static pid_t *pids;

static void *spawner(void *unused) {
    char *argv[] = {"/bin/sleep", "100000", NULL};
    char *envp[] = {"PATH=/usr/bin:/bin", NULL};
    (void)unused;
    for (;;) {
        int i = __atomic_fetch_add(&next_index, 1, __ATOMIC_RELAXED);
        if (i >= n)
            return NULL;
        pid_t pid = vfork();
        if (pid == 0) {
            setsid();
            dup2(null_fd, 0);
            dup2(null_fd, 1);
            dup2(null_fd, 2);
            execve(argv[0], argv, envp);
            _exit(127);
        }
        pids[i] = pid;
    }
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    n = atoi(argv[1]);
    int threads = atoi(argv[2]);
    if (threads < 1)
        threads = 1;
    if (threads > 64)
        threads = 64;
    pids = calloc(n, sizeof *pids);
    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    pthread_t helpers[64];
    for (int t = 1; t < threads; t++)
        pthread_create(&helpers[t], NULL, spawner, NULL);
    spawner(NULL);
    for (int t = 1; t < threads; t++)
        pthread_join(helpers[t], NULL);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    printf("%lld\n", (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000);
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    for (int i = 0; i < n; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGKILL);
    while (wait(NULL) > 0) {
    }
    return 0;
}
"#;

/// Milliseconds from spawning [`FLOOR_START`] over `n` programs, one
/// thread a core, to its stamp.
fn floor_start(scratch: &Scratch, n: u32) -> Result<f64, String> {
    let program = compile_c(FLOOR_START, &scratch.path, "floor-start")?;
    let spawned_at = now_us();
    let mut floor = Command::new(&program)
        .args([n.to_string(), cores().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    let stdout = floor.stdout.take().ok_or("no stdout")?;
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    // Its stdin ends: it kills and reaps its children, then exits.
    drop(floor.stdin.take());
    floor.wait().map_err(|e| e.to_string())?;
    let stamp: i64 = line
        .trim()
        .parse()
        .map_err(|_| format!("it said {line:?}"))?;
    Ok((stamp - spawned_at) as f64 / 1000.0)
}

/// A C supervision loop ([`BARE_LOOP`] or [`SAME_WORK_LOOP`]) running
/// [`STAMP_PROGRAM`], its current child, and the lines it prints (the
/// child's pid, then a stamp of its own).
struct CLoop {
    looping: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    pid: u32,
}

impl CLoop {
    fn start(scratch: &Scratch, stamps: &Stamps, source: &str, name: &str) -> Result<Self, String> {
        let program = compile_c(source, &scratch.path, name)?;
        let mut looping = Command::new(&program)
            .arg(&stamps.program)
            .arg(&stamps.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = looping.stdout.take().ok_or("no stdout")?;
        let mut started = CLoop {
            looping,
            lines: BufReader::new(stdout).lines(),
            pid: 0,
        };
        let (pid, _) = started.next().ok_or("the loop said nothing")?;
        started.pid = pid;
        stamps
            .next_of(pid)
            .ok_or("the loop's first process did not say it runs")?;
        Ok(started)
    }

    fn next(&mut self) -> Option<(u32, i64)> {
        let line = self.lines.next()?.ok()?;
        let (pid, at) = line.split_once(' ')?;
        Some((pid.parse().ok()?, at.parse().ok()?))
    }

    /// SIGKILL to the loop's child; µs until the next one runs.
    fn kill_and_restart(&mut self, stamps: &Stamps) -> Option<i64> {
        let killed_at = now_us();
        send_signal(self.pid, libc::SIGKILL);
        let (pid, _) = self.next()?;
        self.pid = pid;
        Some(stamps.next_of(pid)? - killed_at)
    }
}

impl Drop for CLoop {
    fn drop(&mut self) {
        // The loop first; its last child then comes to this program.
        self.looping.kill().ok();
        self.looping.wait().ok();
        send_signal(self.pid, libc::SIGKILL);
        // SAFETY: our own unreaped child now (this program is a subreaper).
        unsafe { libc::waitpid(self.pid as libc::pid_t, std::ptr::null_mut(), 0) };
    }
}

/// How many services `idle` runs, and for how long it counts.
const IDLE_SERVICES: u32 = 100;
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Context switches of idle supervisors, without and with unrelated churn.
fn idle(options: &Options) {
    let mut trackers = vec!["auto"];
    if is_root() {
        trackers.push("proc-connector");
    }
    for tracker in trackers {
        let options = Options {
            tracker: tracker.to_owned(),
            ..options.clone()
        };
        let scratch = Scratch::new("idle");
        for index in 0..IDLE_SERVICES {
            scratch.service(&format!("s{index:03}"), &sleeper(&options.output, ""));
        }
        let mut adoptd = Adoptd::start(&scratch, &options);
        adoptd.wait_all_running(IDLE_SERVICES as usize);
        adoptd.wait_published();
        let pid = adoptd.pid();
        let (quiet, churn) = count_switches(&|| vec![pid]);
        adoptd.stop();
        println!(
            "idle: adoptd --tracker {tracker}, {IDLE_SERVICES} idle services, context switches in \
             {} s: {quiet} quiet, {churn} while another process starts /bin/true 50 times a \
             second (budget 0)",
            IDLE_WINDOW.as_secs()
        );
    }
    for (name, scanner) in PEERS {
        let Some(peer) = Peer::start(name, scanner, IDLE_SERVICES) else {
            println!("idle: {name} is not installed (apt-get install {name}), not measured");
            continue;
        };
        if peer.wait_all_running().is_none() {
            peer.stop();
            println!("idle: {name} is not measured");
            continue;
        }
        let root = peer.root();
        let tree = || {
            let mut pids = vec![root];
            pids.extend(children_of(root));
            pids
        };
        let (quiet, churn) = count_switches(&tree);
        peer.stop();
        println!(
            "idle: {name}, {IDLE_SERVICES} idle services, context switches in {} s: {quiet} \
             quiet, {churn} while another process starts /bin/true 50 times a second",
            IDLE_WINDOW.as_secs()
        );
    }
}

/// The peers from Debian's packages: their name and their scanner.
const PEERS: [(&str, &str); 2] = [("s6", "s6-svscan"), ("runit", "runsvdir")];

/// A peer supervisor (s6's `s6-svscan`, runit's `runsvdir`) over
/// service directories whose `run` script execs `/bin/sleep 100000`,
/// with a supervisor process (`s6-supervise`, `runsv`) per service.
struct Peer {
    name: &'static str,
    scanner: Child,
    /// The realtime clock just before the scanner was spawned.
    spawned_at: i64,
    services: u32,
    scratch: Scratch,
}

impl Peer {
    /// Starts `scanner` over `services` new service directories; None
    /// when the peer is not installed.
    fn start(name: &'static str, scanner: &str, services: u32) -> Option<Self> {
        let scanner = find_program(scanner)?;
        let scratch = Scratch::new(&format!("peer-{name}"));
        let scan = scratch.path.join("scan");
        for index in 0..services {
            let dir = scan.join(format!("s{index:05}"));
            std::fs::create_dir_all(&dir).expect("a service directory");
            let run = dir.join("run");
            std::fs::write(&run, "#!/bin/sh\nexec /bin/sleep 100000\n").expect("a run script");
            std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .expect("make the run script executable");
        }
        let mut command = Command::new(scanner);
        if name == "s6" {
            // Its default bound on services is below what `start` runs.
            command.arg("-c").arg((services + 16).to_string());
        }
        let spawned_at = now_us();
        let scanner = command
            .arg(&scan)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the peer");
        Some(Peer {
            name,
            scanner,
            spawned_at,
            services,
            scratch,
        })
    }

    fn root(&self) -> u32 {
        self.scanner.id()
    }

    /// One service's directory, as the peer's status tool takes it.
    fn service_dir(&self, index: u32) -> PathBuf {
        self.scratch.path.join("scan").join(format!("s{index:05}"))
    }

    /// Waits until every service's process is `/bin/sleep` (its run
    /// script has exec'd); returns the realtime clock then. Polls every
    /// 5 ms, looking again only at the services not yet seen running.
    /// The moment every service runs; `None` after [`TIMEOUT`].
    fn wait_all_running(&self) -> Option<i64> {
        let deadline = Instant::now() + TIMEOUT;
        let mut running = std::collections::HashSet::new();
        loop {
            for supervisor in children_of(self.root()) {
                if running.contains(&supervisor) {
                    continue;
                }
                let execed = children_of(supervisor).iter().any(|&service| {
                    std::fs::read_to_string(format!("/proc/{service}/comm"))
                        .is_ok_and(|comm| comm.trim() == "sleep")
                });
                if execed {
                    running.insert(supervisor);
                }
            }
            if running.len() >= self.services as usize {
                return Some(now_us());
            }
            if Instant::now() >= deadline {
                println!(
                    "{}: {} of {} services running after {} s",
                    self.name,
                    running.len(),
                    self.services,
                    TIMEOUT.as_secs()
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the scanner, then its per-service supervisors and their
    /// services, which this program (a subreaper) inherits and reaps;
    /// no other child of this program (an adoptd still running).
    fn stop(mut self) {
        let mut tree = std::collections::HashSet::new();
        let mut next = children_of(self.root());
        while let Some(pid) = next.pop() {
            if tree.insert(pid) {
                next.extend(children_of(pid));
            }
        }
        send_signal(self.root(), libc::SIGKILL);
        self.scanner.wait().ok();
        // What it leaves comes to this program, a level at a time: the
        // supervisors first, whose services are then reparented here.
        loop {
            let left: Vec<u32> = children_of(std::process::id())
                .into_iter()
                .filter(|pid| tree.contains(pid))
                .collect();
            if left.is_empty() {
                break;
            }
            for pid in left {
                // SAFETY: our own unreaped children: their pids cannot be
                // reused before we reap them here.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                }
            }
        }
    }
}

/// Context switches of the processes `pids` names, over [`IDLE_WINDOW`]
/// on the machine as it is, then over as long while /bin/true is started
/// 50 times a second.
fn count_switches(pids: &dyn Fn() -> Vec<u32>) -> (u64, u64) {
    // Let start-up settle: the last service's start is no idleness.
    std::thread::sleep(Duration::from_secs(1));
    let mut quiet = Switches::new(pids());
    let began = Instant::now();
    while began.elapsed() < IDLE_WINDOW {
        std::thread::sleep(Duration::from_millis(100));
        quiet.sample(pids());
    }
    let mut churn = Switches::new(pids());
    let began = Instant::now();
    let mut next = began;
    while began.elapsed() < IDLE_WINDOW {
        let mut child = Command::new("/bin/true")
            .stdin(Stdio::null())
            .spawn()
            .expect("run /bin/true");
        child.wait().ok();
        churn.sample(pids());
        next += Duration::from_millis(20);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    (quiet.total, churn.total)
}

/// Context switches (voluntary and not) of every thread of some
/// processes, summed over samples: a thread that ends between two samples
/// loses what it did since the last one, so sample often.
struct Switches {
    last: HashMap<u32, u64>,
    total: u64,
}

impl Switches {
    fn new(pids: Vec<u32>) -> Self {
        Switches {
            last: thread_switches(&pids),
            total: 0,
        }
    }

    fn sample(&mut self, pids: Vec<u32>) {
        let now = thread_switches(&pids);
        for (thread, count) in &now {
            // A thread new since the last sample counts from zero.
            let before = self.last.get(thread).copied().unwrap_or(0);
            self.total += count.saturating_sub(before);
        }
        self.last = now;
    }
}

/// Voluntary and involuntary context switches of each thread of `pids`.
fn thread_switches(pids: &[u32]) -> HashMap<u32, u64> {
    let mut counts = HashMap::new();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some(thread) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let count = status
                .lines()
                .filter_map(|line| {
                    line.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|count| count.trim().parse::<u64>().ok())
                .sum();
            counts.insert(thread, count);
        }
    }
    counts
}

/// The children of `pid`, from every thread's `children` file.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return children;
    };
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    children
}

/// `name` in one of the usual directories of programs.
fn find_program(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
}

/// How many clients read `PIDs` in a loop in `reads`.
const READERS: usize = 4;

/// Another service's SIGKILL → restarted, without and then with
/// [`READERS`] clients reading `PIDs` of a service of 1,001 processes in
/// a loop.
fn reads(options: &Options) {
    let scratch = Scratch::new("reads");
    let report = scratch.path.join("report.sock");
    let times = scratch.path.join("hop-times");
    scratch.service(
        "crowd",
        &format!(
            "exec = {}\nexpect = \"foreground\"\noutput = \"null\"\n",
            dance_argv(
                &report,
                &times,
                &["workers:1000".to_owned(), "serve".to_owned()]
            )
        ),
    );
    scratch.service(
        "victim",
        &sleeper(
            &options.output,
            "restart = \"always\"\nrestart-delay = \"0\"\n\
             start-limit = { burst = 10000, interval = \"1s\" }\n",
        ),
    );
    let mut adoptd = Adoptd::start(&scratch, options);
    let address = adoptd.wait_published();
    let mut pid = adoptd.wait_main_pid("victim", None);
    let path = adoptd_dbus::service_path("crowd");
    // Wait until the crowd's workers are all there.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(READERS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let listed = runtime.block_on(async {
            let connection = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .ok()?;
            read_pids(&connection, &path).await
        });
        if listed.is_some_and(|n| n >= 1001) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the crowd never had 1,001 processes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let quiet = kill_and_restart(&mut adoptd, &mut pid, options.kills);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let (address, path) = (address.clone(), path.clone());
        let (stop, count) = (std::sync::Arc::clone(&stop), std::sync::Arc::clone(&count));
        readers.push(runtime.spawn(async move {
            let connection = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .expect("connect");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if read_pids(&connection, &path).await.is_some() {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    // Let the readers reach their pace.
    std::thread::sleep(Duration::from_secs(1));
    let (cpu_before, reads_before, began) = (
        cpu_ms(adoptd.pid()),
        count.load(std::sync::atomic::Ordering::Relaxed),
        Instant::now(),
    );
    let loaded = kill_and_restart(&mut adoptd, &mut pid, options.kills);
    let elapsed = began.elapsed().as_secs_f64();
    let cpu = cpu_ms(adoptd.pid()) - cpu_before;
    let reads = count.load(std::sync::atomic::Ordering::Relaxed) - reads_before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        runtime.block_on(reader).ok();
    }
    adoptd.stop();
    println!(
        "reads: another service's SIGKILL → restarted over {} kills: median {} µs (p99 {} µs) \
         quiet; median {} µs (p99 {} µs) while {READERS} clients \
         read PIDs of 1,001 processes in a loop = {:.2}× quiet",
        quiet.len(),
        percentile(&quiet, 50),
        percentile(&quiet, 99),
        percentile(&loaded, 50),
        percentile(&loaded, 99),
        percentile(&loaded, 50) as f64 / percentile(&quiet, 50).max(1) as f64,
    );
    println!(
        "reads: meanwhile {:.0} reads/s, adoptd's CPU {:.0} % of one core (all its threads)",
        reads as f64 / elapsed,
        cpu as f64 / 10.0 / elapsed,
    );
}

/// How many times `status` runs each command.
const STATUS_RUNS: u32 = 300;

/// `adoptctl status NAME` as a whole process against s6's `s6-svstat
/// DIR`, each over one running service, run in turn.
fn status(options: &Options) {
    let adoptctl = binary("adoptctl");
    match has_interpreter(&adoptctl) {
        Ok(false) => println!(
            "status: {} is linked statically, as `make` builds it",
            adoptctl.display()
        ),
        Ok(true) => println!(
            "status: {} is linked dynamically (cargo build); `make` links it statically, as it is installed",
            adoptctl.display()
        ),
        Err(e) => println!(
            "status: cannot tell how {} is linked: {e}",
            adoptctl.display()
        ),
    }
    let scratch = Scratch::new("status");
    scratch.service("web", &sleeper(&options.output, ""));
    let mut adoptd = Adoptd::start(&scratch, options);
    let address = adoptd.wait_published();
    adoptd.wait_main_pid("web", None);
    let peer = Peer::start("s6", "s6-svscan", 1);
    let svstat = find_program("s6-svstat");
    let peer = match (peer, svstat) {
        (Some(peer), Some(svstat)) => match peer.wait_all_running() {
            Some(_) => {
                // s6-supervise opens its status file once the service runs.
                std::thread::sleep(Duration::from_millis(100));
                Some((peer, svstat))
            }
            None => {
                peer.stop();
                println!("status: s6 is not compared");
                None
            }
        },
        _ => {
            println!("status: s6 is not installed (apt-get install s6), not compared");
            None
        }
    };
    let time = |command: &mut Command| -> Option<i64> {
        let began = Instant::now();
        let status = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        let took = i64::try_from(began.elapsed().as_micros()).ok()?;
        status.success().then_some(took)
    };
    let floor = match bus_socket(&address) {
        Some(socket) => compile_c(
            &format!("{DBUS_WRITER_C}{FLOOR_STATUS}"),
            &scratch.path,
            "floor-status",
        )
        .map(|program| (program, socket.to_owned())),
        None => Err(format!("the bus address {address} names no socket path")),
    };
    let floor = floor
        .inspect_err(|problem| println!("status: the floor is not measured: {problem}"))
        .ok();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut floors = Vec::new();
    let mut failed = 0;
    for _ in 0..STATUS_RUNS {
        match time(Command::new(&adoptctl).args(["--address", &address, "status", "web"])) {
            Some(took) => ours.push(took),
            None => failed += 1,
        }
        if let Some((peer, svstat)) = &peer {
            match time(Command::new(svstat).arg(peer.service_dir(0))) {
                Some(took) => theirs.push(took),
                None => failed += 1,
            }
        }
        if let Some((program, socket)) = &floor {
            match time(Command::new(program).args([socket, "/org/adoptd1/service/web"])) {
                Some(took) => floors.push(took),
                None => failed += 1,
            }
        }
    }
    if let Some((peer, _)) = peer {
        peer.stop();
    }
    adoptd.stop();
    ours.sort_unstable();
    theirs.sort_unstable();
    floors.sort_unstable();
    if failed > 0 {
        println!("status: {failed} runs failed and are left out");
    }
    println!(
        "status: adoptctl status web, {} runs: median {} µs, p90 {} µs",
        ours.len(),
        percentile(&ours, 50),
        percentile(&ours, 90),
    );
    if !theirs.is_empty() {
        println!(
            "status: s6-svstat DIR, {} runs: median {} µs, p90 {} µs; adoptctl / s6-svstat = {:.2} \
             (median; budget ≤ 1.5)",
            theirs.len(),
            percentile(&theirs, 50),
            percentile(&theirs, 90),
            percentile(&ours, 50) as f64 / percentile(&theirs, 50).max(1) as f64,
        );
    }
    if !floors.is_empty() {
        println!(
            "status: floor (a C client: connect, AUTH, Hello, GetAll and GetOutput in one write), \
             {} runs: median {} µs, p90 {} µs; adoptctl / floor = {:.2}{}",
            floors.len(),
            percentile(&floors, 50),
            percentile(&floors, 90),
            percentile(&ours, 50) as f64 / percentile(&floors, 50).max(1) as f64,
            if theirs.is_empty() {
                String::new()
            } else {
                format!(
                    ", floor / s6-svstat = {:.2}",
                    percentile(&floors, 50) as f64 / percentile(&theirs, 50).max(1) as f64
                )
            },
        );
    }
}

/// Whether the ELF executable at `path` names a program interpreter
/// (`PT_INTERP`, the dynamic loader), that is whether it is linked
/// dynamically. Little-endian 64-bit ELF only, which is what this
/// benchmark runs on.
fn has_interpreter(path: &Path) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    let image = std::fs::read(path).map_err(|e| e.to_string())?;
    let field = |at: usize, width: usize| -> Result<u64, String> {
        let bytes = image
            .get(at..at + width)
            .ok_or_else(|| format!("the file ends before byte {}", at + width))?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0, |value, byte| value << 8 | u64::from(*byte)))
    };
    if image.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        return Err("not a 64-bit ELF file".to_owned());
    }
    let table = usize::try_from(field(0x20, 8)?).map_err(|e| e.to_string())?;
    let entry_size = usize::try_from(field(0x36, 2)?).map_err(|e| e.to_string())?;
    let entries = usize::try_from(field(0x38, 2)?).map_err(|e| e.to_string())?;
    for entry in 0..entries {
        if field(table + entry * entry_size, 4)? == u64::from(PT_INTERP) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What the C floors need to speak D-Bus on a raw socket: connect and
/// authenticate, and write method calls and `PropertiesChanged` signals
/// into `out` (`used` bytes so far).
const DBUS_WRITER_C: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static unsigned char out[4096];
static size_t used, message, body_length_at, fields_length_at, fields_at, body_at;

static void pad(size_t to) {
    while ((used - message) % to)
        out[used++] = 0;
}

static void u32_at(size_t at, uint32_t value) { memcpy(out + at, &value, 4); }

static void u32(uint32_t value) {
    pad(4);
    u32_at(used, value);
    used += 4;
}

static void text(const char *s) {
    u32(strlen(s));
    memcpy(out + used, s, strlen(s) + 1);
    used += strlen(s) + 1;
}

/* A header field of type o, s or g. */
static void field(unsigned char code, char type, const char *s) {
    pad(8);
    out[used++] = code;
    out[used++] = 1;
    out[used++] = type;
    out[used++] = 0;
    if (type == 'g') {
        out[used++] = strlen(s);
        memcpy(out + used, s, strlen(s) + 1);
        used += strlen(s) + 1;
    } else {
        text(s);
    }
}

/* A message of `type` (1 a method call, 4 a signal); its header fields
   follow, then body(), its body, then end(). */
static void begin(unsigned char type, unsigned char flags, uint32_t serial) {
    used = (used + 7) & ~(size_t)7;
    message = used;
    out[used++] = 'l';
    out[used++] = type;
    out[used++] = flags;
    out[used++] = 1;
    body_length_at = used;
    u32(0);
    u32(serial);
    fields_length_at = used;
    u32(0);
    fields_at = used;
}

static void body(void) {
    u32_at(fields_length_at, used - fields_at);
    pad(8);
    body_at = used;
}

static void end(void) { u32_at(body_length_at, used - body_at); }

/* A method call whose body is nothing, one string or one u32. */
static void call(uint32_t serial, const char *destination, const char *path,
                 const char *interface, const char *member, const char *signature,
                 const char *s, uint32_t number) {
    begin(1, 0, serial);
    field(1, 'o', path);
    field(2, 's', interface);
    field(3, 's', member);
    field(6, 's', destination);
    if (signature)
        field(8, 'g', signature);
    body();
    if (signature && signature[0] == 's')
        text(s);
    else if (signature)
        u32(number);
    end();
}

/* PropertiesChanged of org.adoptd1.Service at `path`: MainPID alone. */
static void main_pid_changed(uint32_t serial, const char *path, uint32_t pid) {
    begin(4, 1, serial);
    field(1, 'o', path);
    field(2, 's', "org.freedesktop.DBus.Properties");
    field(3, 's', "PropertiesChanged");
    field(8, 'g', "sa{sv}as");
    body();
    text("org.adoptd1.Service");
    size_t length_at = used;
    u32(0);
    pad(8);
    size_t entries = used;
    text("MainPID");
    out[used++] = 1;
    out[used++] = 'u';
    out[used++] = 0;
    u32(pid);
    u32_at(length_at, used - entries);
    u32(0);
    end();
}

/* Connects to the bus socket at `path` and authenticates as this user:
   the descriptor, or -1. */
static int bus_connect(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    strncpy(address.sun_path, path, sizeof address.sun_path - 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) < 0)
        return -1;
    char uid[16], auth[64] = {0};
    int digits = snprintf(uid, sizeof uid, "%u", (unsigned)getuid());
    int length = 1 + snprintf(auth + 1, sizeof auth - 1, "AUTH EXTERNAL ");
    for (int i = 0; i < digits; i++)
        length += snprintf(auth + length, sizeof auth - length, "%02x", uid[i]);
    length += snprintf(auth + length, sizeof auth - length, "\r\n");
    char line[256];
    if (write(fd, auth, length) != length || read(fd, line, sizeof line) < 3 ||
        memcmp(line, "OK ", 3) != 0 || write(fd, "BEGIN\r\n", 7) != 7)
        return -1;
    return fd;
}
"#;

/// The least a status over the bus can cost: a C client that connects to
/// the bus, authenticates, says Hello and asks adoptd what `adoptctl
/// status` asks (`GetAll` of the service and its last 10 output lines)
/// all in one write, reads until both answers came, and prints nothing.
/// Exits 0 when both are replies, 1 otherwise. Arguments: the bus
/// socket's path, the service's object path. Compiled after
/// [`DBUS_WRITER_C`].
const FLOOR_STATUS: &str = r#"
static unsigned char in[1 << 20];

static uint32_t u32_in(size_t at) {
    uint32_t value;
    memcpy(&value, in + at, 4);
    return value;
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    int fd = bus_connect(argv[1]);
    if (fd < 0)
        return 1;
    call(1, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello",
         NULL, NULL, 0);
    call(2, "org.adoptd1", argv[2], "org.freedesktop.DBus.Properties", "GetAll", "s",
         "org.adoptd1.Service", 0);
    call(3, "org.adoptd1", argv[2], "org.adoptd1.Service", "GetOutput", "u", NULL, 10);
    if (write(fd, out, used) != (ssize_t)used)
        return 1;
    size_t have = 0, at = 0;
    int answered = 0, failed = 0;
    while (answered < 2) {
        /* One whole message: 16 bytes, its fields padded to 8, its body. */
        while (have - at < 16 ||
               have - at < 16 + ((u32_in(at + 12) + 7) & ~7u) + u32_in(at + 4)) {
            ssize_t got = read(fd, in + have, sizeof in - have);
            if (got <= 0)
                return 1;
            have += got;
        }
        uint32_t fields = u32_in(at + 12), body = u32_in(at + 4), reply_to = 0;
        unsigned char type = in[at + 1];
        for (size_t p = 16; p < 16 + fields;) {
            p = (p + 7) & ~(size_t)7;
            unsigned char code = in[at + p];
            char kind = in[at + p + 2];
            p += 3 + in[at + p + 1];
            if (kind == 'g') {
                p += in[at + p] + 2;
            } else {
                p = (p + 3) & ~(size_t)3;
                if (kind == 'u') {
                    if (code == 5)
                        reply_to = u32_in(at + p);
                    p += 4;
                } else {
                    p += 4 + u32_in(at + p) + 1;
                }
            }
        }
        if ((type == 2 || type == 3) && (reply_to == 2 || reply_to == 3)) {
            answered++;
            failed += type == 3;
        }
        at += 16 + ((fields + 7) & ~7u) + body;
    }
    return failed ? 1 : 0;
}
"#;

/// One read of `PIDs` at `path`; how many it listed.
async fn read_pids(connection: &zbus::Connection, path: &str) -> Option<usize> {
    let reply = connection
        .call_method(
            Some("org.adoptd1"),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &("org.adoptd1.Service", "PIDs"),
        )
        .await
        .ok()?;
    let value: zbus::OwnedVariant = reply.body().deserialize().ok()?;
    let pids: Vec<u32> = value.try_into().ok()?;
    Some(pids.len())
}

/// `kills` times: SIGKILL to `pid`, the victim's main process, and the
/// time to its `started` line; `pid` is the new one after each. Returns
/// the latencies, sorted.
fn kill_and_restart(adoptd: &mut Adoptd, pid: &mut u32, kills: u32) -> Vec<i64> {
    let mut total = Vec::new();
    for _ in 0..kills {
        let killed_at = now_us();
        send_signal(*pid, libc::SIGKILL);
        let started = adoptd.wait_line("the victim started again", |line| {
            line.contains(" started ") && field(line, "service") == Some("victim")
        });
        let new_pid = field(&started, "pid")
            .and_then(|p| p.parse().ok())
            .expect("a pid in the started line");
        let Some(started_at) = log_stamp(&started) else {
            panic!("a log line without a time stamp: {started:?}");
        };
        total.push(started_at - killed_at);
        *pid = adoptd.wait_main_pid("victim", Some(new_pid));
    }
    total.sort_unstable();
    total
}

/// A hop's exit → `PropertiesChanged(MainPID)` at a subscriber.
fn signal(options: &Options) {
    let scratch = Scratch::new("signal");
    // adoptd's hops and the floor on the bus take turns, a round each, so
    // that a noisy stretch of the machine falls on both.
    let rounds = options.hops.clamp(1, SIGNAL_ROUNDS);
    let per_round = options.hops.div_ceil(rounds);
    let hops = rounds * per_round;
    let mut steps = vec!["fork".to_owned(), "setsid".to_owned()];
    for _ in 1..per_round {
        steps.push("sleep:5".to_owned());
        steps.push("fork".to_owned());
    }
    steps.push("serve".to_owned());
    let round_files = |round: u32| {
        (
            scratch.path.join(format!("hop-times-{round}")),
            scratch.path.join(format!("report-{round}.sock")),
        )
    };
    for round in 0..rounds {
        let (times, report) = round_files(round);
        scratch.service(
            &format!("hops-{round}"),
            &format!(
                "exec = {}\nrestart = \"no\"\noutput = \"null\"\nautostart = false\n",
                dance_argv(&report, &times, &steps)
            ),
        );
    }
    let mut adoptd = Adoptd::start(&scratch, options);
    let address = adoptd.wait_published();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let programs = FloorPrograms::compile(&scratch);
    let mut latencies = Vec::new();
    let mut coalesced = 0;
    let mut on_bus: Result<Vec<i64>, String> = Ok(Vec::new());
    for round in 0..rounds {
        let (times, report) = round_files(round);
        let service = format!("hops-{round}");
        let watched = runtime.block_on(watch_main_pid(&address, &service, &report));
        let Some((final_pid, arrivals)) = watched else {
            println!("signal: the dance did not settle within {TIMEOUT:?}; adoptd said last:");
            let said: Vec<String> = adoptd.lines.try_iter().collect();
            for line in said.iter().rev().take(20).rev() {
                println!("  {line}");
            }
            adoptd.stop();
            return;
        };
        let (seen, merged) = handoff_latencies(&hop_times(&times), final_pid, &arrivals);
        latencies.extend(seen);
        coalesced += merged;
        // The same round under the floor, on the bus adoptd published on,
        // its broker (with --private-bus, adoptd's own) still there and
        // adoptd idle.
        if let Ok(so_far) = &mut on_bus {
            let round = programs
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|programs| floor_handoffs_on_bus(&scratch, programs, &steps, &address));
            match round {
                Ok(more) => so_far.extend(more),
                Err(problem) => on_bus = Err(problem),
            }
        }
    }
    adoptd.stop();
    latencies.sort_unstable();
    if let Ok(floor) = &mut on_bus {
        floor.sort_unstable();
    }
    let floor_through = |relays| {
        let programs = programs.as_ref().map_err(Clone::clone)?;
        let mut floor = Vec::new();
        for _ in 0..rounds {
            floor.extend(floor_handoffs(&scratch, programs, &steps, relays)?);
        }
        floor.sort_unstable();
        Ok::<_, String>(floor)
    };
    let floor = floor_through(0);
    let brokered = floor_through(1);
    let threaded = floor_through(2);
    if latencies.len() != hops as usize || coalesced > 0 {
        println!(
            "signal: {} of {hops} hop exits seen, {coalesced} of them in a signal of a later hop \
             (hops of one moment are coalesced)",
            latencies.len(),
        );
    }
    println!(
        "signal: hop exit → PropertiesChanged(MainPID) over {} hops: p50 {} µs, p99 {} µs, \
         max {} µs (budget p50 ≤ 300 µs, p99 ≤ 1500 µs quiet; p99 ≤ 3000 µs with both cores busy)",
        latencies.len(),
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        latencies.last().copied().unwrap_or(0),
    );
    match floor {
        Ok(floor) => println!(
            "signal: the floor, hop exit → a subreaper's datagram at a reader (the same dance, \
             no bus) over {} hops: p50 {} µs, p99 {} µs; adoptd's p50 {:.2}× it",
            floor.len(),
            percentile(&floor, 50),
            percentile(&floor, 99),
            percentile(&latencies, 50) as f64 / percentile(&floor, 50).max(1) as f64,
        ),
        Err(problem) => println!("signal: the floor is not measured: {problem}"),
    }
    for (floor, through) in [
        (
            brokered,
            "one relay (as a broker between publisher and subscriber)",
        ),
        (
            threaded,
            "two relays (a publishing thread apart from the reaper, then a broker)",
        ),
    ] {
        match floor {
            Ok(floor) => println!(
                "signal: the floor through {through}: p50 {} µs, p99 {} µs; adoptd's p50 {:.2}× it",
                percentile(&floor, 50),
                percentile(&floor, 99),
                percentile(&latencies, 50) as f64 / percentile(&floor, 50).max(1) as f64,
            ),
            Err(problem) => {
                println!("signal: the floor through {through} is not measured: {problem}")
            }
        }
    }
    match on_bus {
        Ok(floor) => println!(
            "signal: the floor on the bus (the subreaper sends PropertiesChanged(MainPID) itself, \
             through the same broker to a zbus subscriber): p50 {} µs, p99 {} µs; adoptd's p50 \
             {:.2}× it",
            percentile(&floor, 50),
            percentile(&floor, 99),
            percentile(&latencies, 50) as f64 / percentile(&floor, 50).max(1) as f64,
        ),
        Err(problem) => println!("signal: the floor on the bus is not measured: {problem}"),
    }
}

/// The latencies, in µs, of one round's hops (their exits, by pid),
/// seen in `arrivals` (each `PropertiesChanged`'s `MainPID` and arrival),
/// whose last hop is `final_pid`; and how many of them came in a signal
/// of a later hop.
fn handoff_latencies(
    exits: &HashMap<u32, i64>,
    final_pid: u32,
    arrivals: &[(u32, i64)],
) -> (Vec<i64>, usize) {
    // The chain of main processes: each hop's parent in the order they
    // exited, then the last hop, which stays.
    let mut exits: Vec<(i64, u32)> = exits.iter().map(|(&pid, &at)| (at, pid)).collect();
    exits.sort_unstable();
    let position: HashMap<u32, usize> = exits
        .iter()
        .map(|&(_, pid)| pid)
        .chain([final_pid])
        .enumerate()
        .map(|(index, pid)| (pid, index))
        .collect();
    // A hop's exit is seen with the first signal whose MainPID is its
    // heir or a later one: adoptd coalesces the hops of one moment.
    let mut latencies = Vec::new();
    let mut coalesced = 0;
    for (hop, &(exited, _)) in exits.iter().enumerate() {
        let seen = arrivals.iter().find_map(|&(main_pid, arrived)| {
            let index = *position.get(&main_pid)?;
            (index > hop).then_some((index, arrived))
        });
        if let Some((index, arrived)) = seen {
            latencies.push(arrived - exited);
            coalesced += usize::from(index > hop + 1);
        }
    }
    (latencies, coalesced)
}

/// The least any supervisor's hand-off notice costs this machine: a child
/// subreaper that waits in `epoll` on a signalfd for SIGCHLD, as adoptd
/// does, runs the dance as its child and, for each process it reaps,
/// sends the pid at once in a datagram to the socket it is given; after as
/// many reaps as it was told, it kills its children left (the last hop)
/// and exits. Whatever a bus adds (a broker, a client library, a second
/// hop between processes) comes on top of this.
///
/// Compiled with `-DON_BUS` after [`DBUS_WRITER_C`], the socket it is
/// given is a bus's: it says Hello and, for each reap, sends the signal
/// adoptd sends, a `PropertiesChanged` whose `MainPID` is the reaped
/// pid, at [`FLOOR_PATH`]. That is what a supervisor bound to the D-Bus
/// contract cannot avoid: the broker's routing and the subscriber's
/// client library.
const FLOOR_HANDOFF: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* The reader's socket, connected. */
static int open_reader(const char *path) {
#ifdef ON_BUS
    int fd = bus_connect(path);
    if (fd < 0)
        return -1;
    call(1, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello",
         NULL, NULL, 0);
    return write(fd, out, used) == (ssize_t)used ? fd : -1;
#else
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un to = {.sun_family = AF_UNIX};
    strncpy(to.sun_path, path, sizeof to.sun_path - 1);
    return fd >= 0 && connect(fd, (struct sockaddr *)&to, sizeof to) == 0 ? fd : -1;
#endif
}

/* Tells the reader that `pid` was reaped. */
static void tell(int reader, pid_t pid) {
#ifdef ON_BUS
    static uint32_t serial = 2;
    used = 0;
    main_pid_changed(serial++, FLOOR_PATH, (uint32_t)pid);
    if (write(reader, out, used) != (ssize_t)used)
        exit(1);
#else
    char line[16];
    int n = snprintf(line, sizeof line, "%d", (int)pid);
    send(reader, line, n, 0);
#endif
}

int main(int argc, char **argv) {
    if (argc < 4)
        return 2;
    int reaps = atoi(argv[2]);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ready = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ready);
    int reader = open_reader(argv[1]);
    if (sfd < 0 || ep < 0 || reader < 0)
        return 1;
    pid_t first = fork();
    if (first == 0) {
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        execv(argv[3], argv + 3);
        _exit(127);
    }
    while (reaps > 0) {
        if (epoll_wait(ep, &ready, 1, -1) < 1)
            continue;
        struct signalfd_siginfo info;
        while (read(sfd, &info, sizeof info) > 0) {
        }
        pid_t pid;
        while (reaps > 0 && (pid = waitpid(-1, NULL, WNOHANG)) > 0) {
            tell(reader, pid);
            reaps--;
        }
    }
    /* What is left is the last hop, now a child of this one. */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    FILE *children = fopen(path, "r");
    int child;
    while (children && fscanf(children, "%d", &child) == 1)
        kill(child, SIGKILL);
    while (wait(NULL) > 0) {
    }
    return 0;
}
"#;

/// Where the floor on the bus sends its `PropertiesChanged`: no object of
/// adoptd's.
const FLOOR_PATH: &str = "/org/adoptd1/floor";

/// A process between the floor's subreaper and the reader, as a broker
/// is between a publisher and a subscriber: it binds the first socket it
/// is given, says `ready` on stdout, and forwards each datagram to the
/// second, as many as it was told.
const FLOOR_RELAY: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4)
        return 2;
    int count = atoi(argv[3]);
    int in = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int out = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un from = {.sun_family = AF_UNIX}, to = {.sun_family = AF_UNIX};
    strncpy(from.sun_path, argv[1], sizeof from.sun_path - 1);
    strncpy(to.sun_path, argv[2], sizeof to.sun_path - 1);
    if (in < 0 || out < 0 || bind(in, (struct sockaddr *)&from, sizeof from) < 0 ||
        connect(out, (struct sockaddr *)&to, sizeof to) < 0)
        return 1;
    if (write(1, "ready\n", 6) != 6)
        return 1;
    char message[64];
    for (; count > 0; count--) {
        ssize_t n = recv(in, message, sizeof message, 0);
        if (n < 0)
            return 1;
        send(out, message, n, 0);
    }
    return 0;
}
"#;

/// Relays started for one floor run; killed if still there when dropped.
struct Relays(Vec<Child>);

impl Drop for Relays {
    fn drop(&mut self) {
        for relay in &mut self.0 {
            if relay.try_wait().ok().flatten().is_none() {
                let _ = relay.kill();
                let _ = relay.wait();
            }
        }
    }
}

/// The floor's C programs, compiled once for its runs.
struct FloorPrograms {
    subreaper: PathBuf,
    on_bus: PathBuf,
    relay: PathBuf,
}

impl FloorPrograms {
    fn compile(scratch: &Scratch) -> Result<Self, String> {
        let path = format!("-DFLOOR_PATH=\"{FLOOR_PATH}\"");
        Ok(FloorPrograms {
            subreaper: compile_c(FLOOR_HANDOFF, &scratch.path, "floor-handoff")?,
            on_bus: compile_c_with(
                &format!("{DBUS_WRITER_C}{FLOOR_HANDOFF}"),
                &scratch.path,
                "floor-handoff-on-bus",
                &["-DON_BUS", &path],
            )?,
            relay: compile_c(FLOOR_RELAY, &scratch.path, "floor-relay")?,
        })
    }
}

/// Starts `count` relays (`program`) in a chain ending at `reader`, each
/// ready to forward `messages` datagrams; the socket to send to, and the
/// relays.
fn relay_chain(
    scratch: &Scratch,
    program: &Path,
    reader: &Path,
    count: usize,
    messages: usize,
) -> Result<(PathBuf, Relays), String> {
    let mut relays = Relays(Vec::new());
    let mut next = reader.to_path_buf();
    for index in (0..count).rev() {
        let socket = scratch.path.join(format!("relay-{index}.sock"));
        std::fs::remove_file(&socket).ok();
        let mut relay = Command::new(program)
            .arg(&socket)
            .arg(&next)
            .arg(messages.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a relay: {e}"))?;
        let stdout = relay.stdout.take();
        relays.0.push(relay);
        let mut said = String::new();
        stdout
            .map(|out| std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut said))
            .transpose()
            .map_err(|e| e.to_string())?;
        if said.trim() != "ready" {
            return Err("a relay could not bind or connect its sockets".to_owned());
        }
        next = socket;
    }
    Ok((next, relays))
}

/// The floor's latencies, in µs, for the dance `steps` (whose hops are
/// its reaps), sorted: each reap's datagram straight to the reader, or
/// through `relays` processes in a chain.
fn floor_handoffs(
    scratch: &Scratch,
    programs: &FloorPrograms,
    steps: &[String],
    relays: usize,
) -> Result<Vec<i64>, String> {
    let socket_path = scratch.path.join("floor.sock");
    std::fs::remove_file(&socket_path).ok();
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let hops = hop_count(steps);
    let (first, _relays) = relay_chain(scratch, &programs.relay, &socket_path, relays, hops)?;
    let mut buffer = [0u8; 16];
    run_floor(scratch, &programs.subreaper, &first, steps, || {
        let n = socket.recv(&mut buffer).map_err(|e| e.to_string())?;
        let arrived = now_us();
        let pid = std::str::from_utf8(&buffer[..n])
            .ok()
            .and_then(|text| text.parse::<u32>().ok());
        Ok(pid.map(|pid| (pid, arrived)))
    })
}

/// The floor's latencies, in µs, sorted, with each reap told as a
/// `PropertiesChanged` through the bus at `address` to a zbus subscriber
/// as the benchmark's own (see [`FLOOR_HANDOFF`]).
fn floor_handoffs_on_bus(
    scratch: &Scratch,
    programs: &FloorPrograms,
    steps: &[String],
    address: &str,
) -> Result<Vec<i64>, String> {
    let socket = bus_socket(address)
        .ok_or_else(|| format!("the bus address {address} names no socket path"))?;
    let hops = hop_count(steps);
    let (ready_sender, ready) = mpsc::channel();
    let (arrival_sender, arrival) = mpsc::channel();
    let address = address.to_owned();
    // The subscriber runs as `watch_main_pid` does, on a runtime of its
    // own; each arrival is stamped there, then passed on.
    let subscriber = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let connection = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .map_err(|e| e.to_string())?;
            let mut signals = properties_changed_at(&connection, FLOOR_PATH)
                .await
                .map_err(|e| e.to_string())?;
            ready_sender.send(()).ok();
            for _ in 0..hops {
                let Ok(Some(Ok(message))) = tokio::time::timeout(TIMEOUT, signals.next()).await
                else {
                    break;
                };
                let arrived = now_us();
                if arrival_sender
                    .send((main_pid_of(&message), arrived))
                    .is_err()
                {
                    break;
                }
            }
            Ok::<(), String>(())
        })
    });
    let latencies = match ready.recv_timeout(TIMEOUT) {
        Ok(()) => run_floor(scratch, &programs.on_bus, Path::new(socket), steps, || {
            let (pid, arrived) = arrival
                .recv_timeout(TIMEOUT)
                .map_err(|_| "no signal came".to_owned())?;
            Ok(pid.map(|pid| (pid, arrived)))
        }),
        Err(_) => Err("the subscriber did not subscribe".to_owned()),
    };
    drop(arrival);
    match subscriber.join() {
        Ok(Err(problem)) => Err(format!("the subscriber failed: {problem}")),
        _ => latencies,
    }
}

/// How many hops (forks, so reaps) the dance `steps` makes.
fn hop_count(steps: &[String]) -> usize {
    steps.iter().filter(|step| step.as_str() == "fork").count()
}

/// Runs the floor's subreaper `program` on the dance `steps`, telling
/// `reader`; `next_arrival` waits for the next thing it told (a reaped
/// pid, or None for something else, and when it arrived). Its latencies,
/// in µs, sorted.
fn run_floor(
    scratch: &Scratch,
    program: &Path,
    reader: &Path,
    steps: &[String],
    mut next_arrival: impl FnMut() -> Result<Option<(u32, i64)>, String>,
) -> Result<Vec<i64>, String> {
    let times = scratch.path.join("floor-hop-times");
    std::fs::remove_file(&times).ok();
    let hops = hop_count(steps);
    // Without --report the dance's last hop reports on stdout.
    let mut floor = Command::new(program)
        .arg(reader)
        .arg(hops.to_string())
        .arg(binary("dance"))
        .arg("--hop-times")
        .arg(&times)
        .args(steps)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut arrivals = Vec::with_capacity(hops);
    while arrivals.len() < hops {
        match next_arrival() {
            Ok(arrival) => arrivals.extend(arrival),
            Err(e) => {
                // Its children first: killed, it would leave them to init.
                let pid = floor.id();
                let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .unwrap_or_default();
                for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                    send_signal(child, libc::SIGKILL);
                }
                let _ = floor.kill();
                let _ = floor.wait();
                return Err(format!("{} of {hops} reaps heard: {e}", arrivals.len()));
            }
        }
    }
    floor.wait().map_err(|e| e.to_string())?;
    let exits = hop_times(&times);
    let mut latencies: Vec<i64> = arrivals
        .iter()
        .filter_map(|(pid, arrived)| Some(arrived - exits.get(pid)?))
        .collect();
    latencies.sort_unstable();
    Ok(latencies)
}

/// Subscribes to `service`'s `PropertiesChanged`, starts it, and collects
/// the new `MainPID` and arrival time (µs since the epoch) of every such
/// signal until the dance has reported from its last hop and `MainPID`
/// is that hop. Returns the last hop's pid and the arrivals, or None if
/// that took longer than [`TIMEOUT`].
async fn watch_main_pid(
    address: &str,
    service: &str,
    report: &Path,
) -> Option<(u32, Vec<(u32, i64)>)> {
    let report = tokio::net::UnixDatagram::bind(report).expect("bind the report socket");
    let connection = zbus::connection::Builder::address(address)
        .build()
        .await
        .expect("connect to adoptd's private bus");
    let path = adoptd_dbus::service_path(service);
    let mut signals = properties_changed_at(&connection, path.as_str())
        .await
        .expect("subscribe to PropertiesChanged");
    let manager = adoptd_dbus::ManagerProxy::new(&connection)
        .await
        .expect("a Manager proxy");
    manager.start_service(service).await.expect("StartService");
    let mut arrivals: Vec<(u32, i64)> = Vec::new();
    let mut final_pid = None;
    let mut buffer = [0u8; 512];
    loop {
        if let Some(pid) = final_pid
            && arrivals
                .last()
                .is_some_and(|&(main_pid, _)| main_pid == pid)
        {
            return Some((pid, arrivals));
        }
        let next = async {
            tokio::select! {
                message = signals.next() => Some(message),
                received = report.recv(&mut buffer), if final_pid.is_none() => {
                    let length = received.expect("a report from the dance helper");
                    let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
                    final_pid = field(&text, "pid").and_then(|p| p.parse().ok());
                    None
                }
            }
        };
        let Ok(next) = tokio::time::timeout(TIMEOUT, next).await else {
            return None;
        };
        let Some(Some(Ok(message))) = next else {
            continue;
        };
        let arrived = now_us();
        if let Some(main_pid) = main_pid_of(&message).filter(|&pid| pid != 0) {
            arrivals.push((main_pid, arrived));
        }
    }
}

/// A stream of the `PropertiesChanged` signals sent at `path`.
async fn properties_changed_at(
    connection: &zbus::Connection,
    path: &str,
) -> zbus::Result<zbus::MessageStream> {
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .path(path)
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .build()?;
    // zbus drops what overflows a stream's queue without a word: room for
    // every hop's signal, however slowly this side reads.
    let queue = std::num::NonZeroUsize::new(1 << 16);
    zbus::MessageStream::for_match_rule(rule, connection, queue).await
}

/// The `MainPID` a `PropertiesChanged` carries, if it carries one.
fn main_pid_of(message: &zbus::Message) -> Option<u32> {
    let (_, changed, _) = message
        .body()
        .deserialize::<(String, HashMap<String, zbus::OwnedVariant>, Vec<String>)>()
        .ok()?;
    u32::try_from(changed.get("MainPID")?).ok()
}

/// The socket path of a `unix:path=` bus address (a dbus-daemon's goes on
/// after the path with `,guid=…`).
fn bus_socket(address: &str) -> Option<&str> {
    address
        .strip_prefix("unix:path=")
        .and_then(|rest| rest.split(',').next())
}

/// `PID SECONDS.NANOSECONDS` lines → exit time in µs since the epoch, by pid.
fn hop_times(path: &Path) -> HashMap<u32, i64> {
    std::fs::read_to_string(path)
        .expect("read the hop times")
        .lines()
        .filter_map(|line| {
            let (pid, time) = line.split_once(' ')?;
            let (seconds, nanos) = time.split_once('.')?;
            let micros =
                seconds.parse::<i64>().ok()? * 1_000_000 + nanos.get(..6)?.parse::<i64>().ok()?;
            Some((pid.parse().ok()?, micros))
        })
        .collect()
}

/// 10,000 services: adoptd's memory and `adoptctl list`.
fn many(options: &Options) {
    let n = options.many;
    let mut output = options.output.as_str();
    let mut idle = options.idle || !room_for_processes(n);
    if !idle && !room_for_descriptors(u64::from(n) * descriptors_per_service(output) + 1024) {
        if output == "log" && room_for_descriptors(u64::from(n) + 1024) {
            println!("many: the services' output is \"null\" instead (a pidfd each, no pipe)");
            output = "null";
        } else {
            println!("many: the services are loaded but not started");
            idle = true;
        }
    }
    let scratch = Scratch::new("many");
    let extra = if idle { "autostart = false\n" } else { "" };
    for index in 0..n {
        scratch.service(&format!("s{index:05}"), &sleeper(output, extra));
    }
    let mut adoptd = Adoptd::start(&scratch, options);
    let running = if idle {
        None
    } else {
        Some(adoptd.wait_all_running(n as usize))
    };
    let address = adoptd.wait_published();
    let published = adoptd.published_after_ms();
    let loaded = Memory::of(adoptd.pid());
    let mut walls = Vec::new();
    let adoptd_cpu = cpu_ms(adoptd.pid());
    let adoptctl_cpu = children_cpu_ms();
    for _ in 0..options.lists {
        match adoptctl_list(&scratch, &address) {
            Ok(wall) => walls.push(wall),
            Err(problem) => println!("many: adoptctl list failed: {problem}"),
        }
    }
    let lists = options.lists.max(1);
    let adoptd_cpu = (cpu_ms(adoptd.pid()) - adoptd_cpu) / u64::from(lists);
    let adoptctl_cpu = (children_cpu_ms() - adoptctl_cpu) / u64::from(lists);
    let listed = Memory::of(adoptd.pid());
    // What other clients ask (`adoptctl status` with no name, the
    // exporter): every property of every object at once.
    let managed = get_managed_objects(&address);
    let answered = Memory::of(adoptd.pid());
    // A settle period that is part of the measurement: adoptd gives the
    // memory of a large reply back a second after the burst of reads.
    std::thread::sleep(Duration::from_secs(2));
    let settled = Memory::of(adoptd.pid());
    let spawned_at = adoptd.spawned_at;
    adoptd.stop();

    let what = if idle {
        "loaded, not started (autostart = false)".to_owned()
    } else {
        format!("running /bin/sleep, output {output}")
    };
    match running {
        Some(at) => println!(
            "many: {n} services {what}: all running after {:.2} s, on the bus after {:.2} s",
            (at - spawned_at) as f64 / 1e6,
            published / 1000.0
        ),
        None => println!(
            "many: {n} services {what}: on the bus after {:.2} s",
            published / 1000.0
        ),
    }
    println!("many: adoptd before any list: {loaded} (budget ≤ 64 MB)");
    walls.sort_unstable_by(f64::total_cmp);
    let shown: Vec<String> = walls.iter().map(|w| format!("{w:.0}")).collect();
    println!(
        "many: adoptctl list, {} runs: median {:.0} ms (sorted: {} ms) (budget ≤ 300 ms); \
         CPU per list: adoptd {adoptd_cpu} ms, adoptctl {adoptctl_cpu} ms",
        walls.len(),
        walls.get(walls.len() / 2).copied().unwrap_or(0.0),
        shown.join(", "),
    );
    println!("many: adoptd after the lists: {listed} (budget ≤ 64 MB)");
    match managed {
        Ok((bytes, ms)) => println!(
            "many: one GetManagedObjects: {bytes} bytes in {ms:.0} ms; adoptd after it: {answered} \
             (budget ≤ 64 MB)"
        ),
        Err(problem) => println!("many: GetManagedObjects failed: {problem}"),
    }
    println!("many: adoptd 2 s after the lists: {settled} (budget ≤ 64 MB)");
}

/// One `GetManagedObjects` on adoptd's bus: the reply's size in bytes
/// and the milliseconds to it.
fn get_managed_objects(address: &str) -> Result<(usize, f64), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let connection = zbus::connection::Builder::address(address)
            .build()
            .await
            .map_err(|e| e.to_string())?;
        let began = Instant::now();
        let reply = connection
            .call_method(
                Some("org.adoptd1"),
                "/org/adoptd1",
                Some("org.freedesktop.DBus.ObjectManager"),
                "GetManagedObjects",
                &(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let ms = began.elapsed().as_secs_f64() * 1000.0;
        Ok((reply.data().len(), ms))
    })
}

/// Runs `adoptctl list` once; its wall time in milliseconds.
fn adoptctl_list(scratch: &Scratch, address: &str) -> Result<f64, String> {
    let errors = scratch.path.join("adoptctl.err");
    let stderr = std::fs::File::create(&errors).map_err(|e| e.to_string())?;
    let began = Instant::now();
    let mut child = Command::new(binary("adoptctl"))
        .args(["--address", address, "list"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot run adoptctl: {e}"))?;
    if !wait_exit(&mut child, TIMEOUT) {
        child.kill().ok();
        child.wait().ok();
        return Err(format!("no answer within {TIMEOUT:?}"));
    }
    let wall = began.elapsed().as_secs_f64() * 1000.0;
    match child.try_wait() {
        Ok(Some(status)) if status.success() => Ok(wall),
        status => Err(format!(
            "{status:?}: {}",
            std::fs::read_to_string(&errors).unwrap_or_default().trim()
        )),
    }
}

/// Whether `n` more processes fit under pid_max and threads-max with room
/// to spare for everything else the machine runs.
fn room_for_processes(n: u32) -> bool {
    let read =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    // The fourth field of loadavg is "runnable/existing" scheduling entities.
    let existing = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| {
            let field = text.split_whitespace().nth(3)?;
            field.split_once('/')?.1.parse::<u64>().ok()
        })
        .unwrap_or(0);
    let limit = [
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(32_768);
    let needed = u64::from(n) + existing + 4096;
    if needed > limit {
        println!(
            "many: {n} processes do not fit beside the {existing} that exist (pid_max / threads-max {limit}): \
             the services are loaded but not started"
        );
        return false;
    }
    true
}

/// A service file for `/bin/sleep 100000` run in the foreground.
fn sleeper(output: &str, extra: &str) -> String {
    format!(
        "exec = [\"/bin/sleep\", \"100000\"]\nexpect = \"foreground\"\noutput = \"{output}\"\n{extra}"
    )
}

fn dance_argv(report: &Path, hop_times: &Path, steps: &[String]) -> String {
    let mut argv = vec![
        binary("dance").display().to_string(),
        "--report".into(),
        report.display().to_string(),
        "--hop-times".into(),
        hop_times.display().to_string(),
    ];
    argv.extend(steps.iter().cloned());
    let quoted: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A process's utime + stime in milliseconds, all threads.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15, 12 and 13 after the name.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1000 / per_second
}

/// The user + system time of this program's reaped children, in
/// milliseconds.
fn children_cpu_ms() -> u64 {
    // SAFETY: getrusage writes into the struct it is given; all zeroes
    // is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// The realtime clock in microseconds since the epoch, as the log's stamps.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn send_signal(pid: u32, signal: i32) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    // SAFETY: kill on an unreaped child of adoptd's, which cannot be
    // recycled before adoptd reaps it.
    unsafe { libc::kill(pid, signal) };
}

/// adoptd's memory, from `/proc/PID/smaps_rollup` and `/proc/PID/status`.
struct Memory {
    rss_kb: u64,
    pss_kb: u64,
    anonymous_kb: u64,
    peak_kb: u64,
}

impl Memory {
    fn of(pid: u32) -> Self {
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
        let kb = |text: &str, key: &str| -> u64 {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        let rss_kb = match kb(&rollup, "Rss") {
            0 => kb(&status, "VmRSS"),
            rss => rss,
        };
        Memory {
            rss_kb,
            pss_kb: kb(&rollup, "Pss"),
            anonymous_kb: kb(&rollup, "Anonymous"),
            peak_kb: kb(&status, "VmHWM"),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |kb: u64| kb as f64 / 1024.0;
        write!(
            f,
            "Rss {:.1} MB, Anonymous {:.1} MB, Pss {:.1} MB, peak (VmHWM) {:.1} MB",
            mb(self.rss_kb),
            mb(self.anonymous_kb),
            mb(self.pss_kb),
            mb(self.peak_kb)
        )
    }
}

/// A scratch directory, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "adoptd-bench-budgets-{name}-{}",
            std::process::id()
        ));
        std::fs::remove_dir_all(&path).ok();
        std::fs::create_dir_all(path.join("services")).expect("create the scratch dir");
        Scratch { path }
    }

    fn service(&self, name: &str, text: &str) {
        std::fs::write(
            self.path.join("services").join(format!("{name}.toml")),
            text,
        )
        .expect("write a service file");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.path).ok();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A running adoptd on its private bus, and what its output said so far.
struct Adoptd {
    child: Child,
    /// The `dbus-daemon` it publishes on, if not its own bus; stopped
    /// after adoptd (fields drop after `Drop::drop`).
    _bus: Option<Bus>,
    /// Its stdout and stderr lines, in the order the readers got them.
    lines: mpsc::Receiver<String>,
    /// The realtime clock just before it was spawned, µs since the epoch.
    spawned_at: i64,
    /// The bus address as this process reaches it.
    address: Option<String>,
    /// The log stamp of `published as org.adoptd1`.
    published_at: Option<i64>,
    /// Services whose last status line said `running`, and their main pid.
    running: HashMap<String, u32>,
    /// The log stamp of the last line that added a service to `running`.
    running_grew_at: Option<i64>,
    stopped: bool,
}

impl Adoptd {
    /// Starts adoptd on `scratch`'s services.
    fn start(scratch: &Scratch, options: &Options) -> Self {
        let bus = options.dbus_daemon.then(|| Bus::start(&scratch.path));
        let mut command = Command::new(binary("adoptd"));
        match &bus {
            Some(bus) => command.args(["--address", &bus.address]),
            None => command.arg("--private-bus"),
        };
        command
            .arg("--config-dir")
            .arg(scratch.path.join("services"))
            .args(["--tracker", &options.tracker])
            .env("ADOPTD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let private_run = is_root();
        if !private_run {
            let runtime = scratch.path.join("runtime");
            std::fs::create_dir_all(&runtime).expect("create the runtime directory");
            command.env("XDG_RUNTIME_DIR", runtime);
        }
        // SAFETY: the closure runs between fork and exec and only makes
        // system calls on data prepared before the fork.
        unsafe {
            command.pre_exec(move || {
                if private_run {
                    private_run_directory()?;
                }
                Ok(())
            });
        }
        let spawned_at = now_us();
        let mut child = command.spawn().expect("start adoptd");
        let (sender, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("adoptd's stderr");
        let stdout = child.stdout.take().expect("adoptd's stdout");
        forward_lines(stderr, sender.clone());
        forward_lines(stdout, sender);
        Adoptd {
            child,
            address: bus.as_ref().map(|bus| bus.address.clone()),
            _bus: bus,
            lines,
            spawned_at,
            published_at: None,
            running: HashMap::new(),
            running_grew_at: None,
            stopped: false,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until every service is on the bus; returns the bus address.
    fn wait_published(&mut self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        while self.published_at.is_none() || self.address.is_none() {
            self.next_line(deadline, "published as org.adoptd1 and its address");
        }
        self.address.clone().unwrap_or_default()
    }

    /// Milliseconds from spawning adoptd to its `published as` line.
    fn published_after_ms(&self) -> f64 {
        self.published_at
            .map_or(f64::NAN, |at| (at - self.spawned_at) as f64 / 1000.0)
    }

    /// Waits until `n` services run; returns the log stamp of the line
    /// that made it `n`.
    fn wait_all_running(&mut self, n: usize) -> i64 {
        let deadline = Instant::now() + TIMEOUT;
        while self.running.len() < n {
            self.next_line(deadline, &format!("{n} services running"));
        }
        self.running_grew_at.unwrap_or(self.spawned_at)
    }

    /// Waits until `service` runs (with main pid `pid`, if given); returns
    /// its main pid.
    fn wait_main_pid(&mut self, service: &str, pid: Option<u32>) -> u32 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.running.get(service) {
                Some(&main) if pid.is_none_or(|p| p == main) => return main,
                _ => {}
            }
            self.next_line(deadline, &format!("{service} running"));
        }
    }

    /// Waits for the next line that `matches`; returns it.
    fn wait_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let line = self.next_line(deadline, what);
            if matches(&line) {
                return line;
            }
        }
    }

    fn next_line(&mut self, deadline: Instant, what: &str) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = self
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("adoptd did not show {what} within {TIMEOUT:?}"));
        self.observe(&line);
        line
    }

    /// Keeps what every wait may need from a line: the address, the
    /// publication, the running services.
    fn observe(&mut self, line: &str) {
        if let Some(address) = line.strip_prefix("ADOPTD_BUS_ADDRESS=") {
            let address = address.trim();
            // In adoptd's own mount namespace: reach it through its root.
            self.address = Some(match address.strip_prefix("unix:path=") {
                Some(path) if is_root() => format!("unix:path=/proc/{}/root{path}", self.pid()),
                _ => address.to_owned(),
            });
        } else if line.contains(" adoptd starting ")
            && let Some(tracker) = field(line, "tracker")
        {
            // Said once: every adoptd of a run makes the same choice.
            static TRACKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            if TRACKER.set(tracker.to_owned()).is_ok() {
                println!("adoptd's tracker: {tracker}");
            }
        } else if line.contains(" published as org.adoptd1 ") {
            self.published_at = log_stamp(line);
        } else if line.contains(" status service=")
            && let Some(service) = field(line, "service")
        {
            if field(line, "state") == Some("running") {
                let main = field(line, "main_pid").and_then(|p| p.parse().ok());
                if self
                    .running
                    .insert(service.to_owned(), main.unwrap_or(0))
                    .is_none()
                {
                    self.running_grew_at = log_stamp(line);
                }
            } else {
                self.running.remove(service);
            }
        }
    }

    /// SIGTERM, then waits for adoptd to stop every service and exit.
    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        send_signal(self.pid(), libc::SIGTERM);
        if wait_exit(&mut self.child, STOP_TIMEOUT) {
            return;
        }
        let pid = self.pid();
        let last: Vec<String> = self.lines.try_iter().collect();
        for line in &last {
            self.observe(line);
        }
        let state = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("State:"))
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        eprintln!(
            "adoptd (pid {pid}) did not exit within {STOP_TIMEOUT:?} of SIGTERM ({state}, {} services \
             still running by its log); its last lines:",
            self.running.len()
        );
        for line in last.iter().rev().take(5).rev() {
            eprintln!("  {line}");
        }
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let stack = std::fs::read_to_string(task.path().join("stack")).unwrap_or_default();
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            eprintln!(
                "  thread {} ({}): {}",
                task.file_name().to_string_lossy(),
                name.trim(),
                stack.lines().take(4).collect::<Vec<_>>().join(" < ")
            );
        }
        self.child.kill().ok();
        self.child.wait().ok();
        kill_orphans();
    }
}

impl Drop for Adoptd {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Kills and reaps the processes left to this program, a child
/// subreaper, by an adoptd that had to be killed.
fn kill_orphans() {
    let children = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|pid| pid.parse::<libc::pid_t>().ok())
                .collect::<Vec<_>>()
        });
    for pid in children {
        // SAFETY: our own unreaped children: their pids cannot be reused
        // before we reap them here.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        eprintln!("  killed process {pid}, left behind by adoptd");
    }
}

/// Sends every line of `stream` to `sender`, reading to the end even when
/// nobody listens any more, so that adoptd never blocks on a full pipe.
fn forward_lines(stream: impl Read + Send + 'static, sender: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sender.send(line).ok();
        }
    });
}

/// In the child, before exec: a mount namespace of its own with a tmpfs
/// on `/run`, so that root's private bus socket, `/run/adoptd/bus`, is
/// this adoptd's alone.
fn private_run_directory() -> std::io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls on static C strings.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"tmpfs".as_ptr(),
            c"/run".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755".as_ptr().cast(),
        ))
    }
}

/// Whether adoptd, which inherits this program's RLIMIT_NOFILE and raises
/// its soft limit to the hard one, may open `needed` descriptors; raises
/// the hard limit when it can (only with CAP_SYS_RESOURCE).
fn room_for_descriptors(needed: u64) -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return false;
    }
    if limit.rlim_max >= needed {
        return true;
    }
    let raised = libc::rlimit {
        rlim_cur: needed,
        rlim_max: limit.rlim_max.max(needed),
    };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        println!(
            "(RLIMIT_NOFILE is {} (hard {}): {needed} descriptors do not fit, and raising it failed: {})",
            limit.rlim_cur,
            limit.rlim_max,
            std::io::Error::last_os_error()
        );
        return false;
    }
    println!(
        "(RLIMIT_NOFILE raised from {} to {needed} for adoptd)",
        limit.rlim_cur
    );
    true
}

/// Descriptors adoptd holds per running service: a pidfd, and the read
/// end of the output pipe when the output is logged.
fn descriptors_per_service(output: &str) -> u64 {
    if output == "log" { 2 } else { 1 }
}

/// Waits up to `timeout` for `child` to end, on a pidfd; true once it has
/// ended and is reaped.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: pidfd_open takes a pid and flags, and returns a new
    // descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if let Ok(raw) = i32::try_from(raw)
        && raw >= 0
    {
        // SAFETY: a descriptor just opened, owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut poll = libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, millis) };
            let interrupted = ready < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
            if !interrupted || left.is_zero() {
                break;
            }
        }
    }
    matches!(child.try_wait(), Ok(Some(_)))
}

/// The value of `key=` in a log line, without quotes.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|token| token.strip_prefix(key)?.strip_prefix('='))
        .map(|value| value.trim_matches('"'))
}

/// A log line's stamp in microseconds since the epoch.
fn log_stamp(line: &str) -> Option<i64> {
    parse_utc_micros(line.split(' ').next()?)
}
