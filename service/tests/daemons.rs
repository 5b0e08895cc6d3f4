//! adoptd following real daemons from Debian's packages, as root, with the
//! expected main pid taken from each daemon's own pid file, and what
//! adoptd knows read on its bus (a private one per test).

// A failed expectation in a test is the test failing, with a reason.
#![allow(clippy::expect_used)]

use std::path::PathBuf;

use adoptd_test_support::*;

/// The program, or a printed reason to skip (CI installs them as root).
fn daemon(program: &str, test: &str) -> Option<PathBuf> {
    if !is_root() {
        eprintln!("{test}: skipped: needs root");
        return None;
    }
    let found = installed(program);
    if found.is_none() {
        eprintln!("{test}: skipped: {program} is not installed");
    }
    found
}

/// The master's workers, as its children.
fn workers_of(master: u32) -> Vec<u32> {
    children_of(master)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

#[test]
fn nginx_is_followed_to_its_master_restarted_clean_and_through_its_binary_upgrade() {
    let Some(nginx) = daemon("nginx", "nginx") else {
        return;
    };
    for tracker in trackers() {
        let scratch = Scratch::new("nginx");
        let pid_file = nginx_service(&scratch, &nginx);
        let (adoptd, mut watch) = Adoptd::start_watched(&scratch, &["--tracker", &tracker]);

        // Followed to its master.
        let master = wait_for_pid_file(&pid_file);
        let status = watch.wait_main_pid("nginx", master);
        assert_eq!(status.handoffs, 1, "{tracker}: {status:?}");
        // nginx logs each worker it starts (after writing its pid file).
        let error_log = scratch.file("error.log");
        let workers = wait_for_file(&error_log, |text| {
            let started: Vec<u32> = text
                .lines()
                .filter_map(|l| l.split("start worker process ").nth(1)?.trim().parse().ok())
                .collect();
            (started.len() == 2).then_some(started)
        });
        assert_eq!(
            workers_of(master).len(),
            2,
            "{tracker}: two workers, children of the master"
        );

        // SIGKILL: restarted, and no worker of the killed master is left.
        std::fs::remove_file(&pid_file).ok();
        signal(master, libc::SIGKILL);
        watch.wait_signal("the killed master", |signal| {
            matches!(signal, Signal::Exited { service, pid, .. } if service == "nginx" && *pid == master)
        });
        let master = wait_for_pid_file(&pid_file);
        let status = watch.wait_main_pid("nginx", master);
        assert_eq!(status.restarts, 1, "{tracker}");
        for worker in workers {
            assert_ends(worker, "a worker of the killed master");
        }

        // Binary upgrade: USR2 starts a new master as the old one's child;
        // QUIT ends the old one, and the new one is its heir. Sent once the
        // restarted master has started its workers: before that, it may
        // not handle USR2 yet (its default action ends the process).
        wait_for_file(&error_log, |text| {
            (text.matches("start worker process ").count() >= 4).then_some(())
        });
        signal(master, libc::SIGUSR2);
        let old_pid_file = scratch.file("nginx.pid.oldbin");
        wait_for_pid_file(&old_pid_file);
        let new_master = wait_for_file(&pid_file, |text| {
            text.trim().parse::<u32>().ok().filter(|&pid| pid != master)
        });
        signal(master, libc::SIGQUIT);
        let status = watch.wait_main_pid("nginx", new_master);
        assert_eq!(status.previous_pid, master, "{tracker}: {status:?}");
        assert_eq!(status.handoffs, 2, "{tracker}: {status:?}");
        // Stopped, it is the new master that ends.
        watch.stop(&["nginx"]);
        watch.wait_signal("the new master's end", |signal| {
            matches!(signal, Signal::Exited { service, pid, .. } if service == "nginx" && *pid == new_master)
        });
        assert_ends(new_master, "nginx after its stop");
        let (exit, _) = adoptd.stop();
        assert!(exit.success());
    }
}

#[test]
fn memcached_daemonized_with_d_is_followed_to_the_pid_in_its_pid_file() {
    let Some(memcached) = daemon("memcached", "memcached") else {
        return;
    };
    for tracker in trackers() {
        let scratch = Scratch::new("memcached");
        let pid_file = memcached_service(&scratch, &memcached, "");
        let (adoptd, mut watch) = Adoptd::start_watched(&scratch, &["--tracker", &tracker]);
        let main = wait_for_pid_file(&pid_file);
        watch.wait_main_pid("memcached", main);
        let (exit, _) = adoptd.stop();
        assert!(exit.success());
        assert_ends(main, "memcached after adoptd stopped");
    }
}

#[test]
fn redis_daemonized_is_followed_to_the_pid_in_its_pid_file() {
    let Some(redis) = daemon("redis-server", "redis") else {
        return;
    };
    for tracker in trackers() {
        let scratch = Scratch::new("redis");
        let pid_file = scratch.file("redis.pid");
        let port = free_port().to_string();
        scratch.service(
            "redis",
            &format!(
                "exec = {}\n",
                argv(&[
                    redis.to_str().expect("utf-8"),
                    "--daemonize",
                    "yes",
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--pidfile",
                    pid_file.to_str().expect("utf-8"),
                    "--dir",
                    scratch.path.to_str().expect("utf-8"),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--logfile",
                    "",
                ])
            ),
        );
        let (adoptd, mut watch) = Adoptd::start_watched(&scratch, &["--tracker", &tracker]);
        let main = wait_for_pid_file(&pid_file);
        watch.wait_main_pid("redis", main);
        let (exit, _) = adoptd.stop();
        assert!(exit.success());
        assert_ends(main, "redis after adoptd stopped");
    }
}
