//! lit-mux's own end, with children running: SIGKILL, SIGTERM, and churn.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::support::mcp::{everything, fixture_server, is_orphan_guard};
use crate::support::{Server, TestHome};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use testkit::processes::{self, descendants, fd_listing, in_group, is_alive, wait_until};

/// Starts a varied set of children and returns every pid lit-mux has below it.
async fn start_children(server: &Server) -> Vec<i32> {
    let requests = [
        fixture_server("plain", "healthy", &[]),
        fixture_server("stubborn", "ignore-sigterm", &[]),
        fixture_server("deaf", "ignore-stdin-eof", &[]),
        fixture_server("forker", "grandchild", &[]),
        json!({"name": "everything", "command": everything(), "args": ["stdio"]}),
    ];
    for request in requests {
        let (status, body) = server.post_json("/mcp/servers", &request).await;
        assert_eq!(status, 200, "{body}");
    }
    // The forker's grandchild shows up on its stderr once spawned.
    assert!(wait_until(Duration::from_secs(5), || descendants(
        server.pid()
    )
    .len()
        >= 7));
    descendants(server.pid())
        .into_iter()
        .filter(|p| !is_orphan_guard(p.pid))
        .map(|p| p.pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_lit_mux_leaves_no_child_or_grandchild() {
    let home = TestHome::new();
    let mut server = home.start(&[]);
    let pids = start_children(&server).await;
    assert!(pids.len() >= 6, "children and grandchild: {pids:?}");
    server.signal(Signal::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());
    let all_gone = wait_until(Duration::from_secs(5), || {
        pids.iter().all(|&pid| !is_alive(pid))
    });
    let survivors: Vec<_> = pids
        .iter()
        .filter_map(|&pid| processes::read(pid))
        .filter(|p| p.state != 'Z')
        .collect();
    assert!(
        all_gone,
        "survivors after SIGKILL of lit-mux: {survivors:?}"
    );
}

/// `killall -9 lit-mux` kills the orphan guard too: then only `PR_SET_PDEATHSIG`, which the
/// kernel acts on, stands between lit-mux's children and init. (Grandchildren are the guard's
/// job: they are not part of this test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_die_with_lit_mux_even_when_its_orphan_guard_dies_first() {
    let home = TestHome::new();
    let mut server = home.start(&[]);
    let mut pids = Vec::new();
    for (name, mode) in [
        ("plain", "healthy"),
        ("stubborn", "ignore-sigterm"),
        ("deaf", "ignore-stdin-eof"),
    ] {
        let (status, body) = server
            .post_json("/mcp/servers", &fixture_server(name, mode, &[]))
            .await;
        assert_eq!(status, 200, "{body}");
        pids.push(body["server"]["pid"].as_i64().unwrap() as i32);
    }
    let guard = descendants(server.pid())
        .into_iter()
        .find(|p| is_orphan_guard(p.pid))
        .expect("lit-mux runs its orphan guard");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(guard.pid), Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !is_alive(guard.pid)));
    assert!(
        pids.iter().all(|&pid| is_alive(pid)),
        "the guard kills nobody when it dies"
    );
    server.signal(Signal::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(5)).is_some());
    let all_gone = wait_until(Duration::from_secs(5), || {
        pids.iter().all(|&pid| !is_alive(pid))
    });
    let survivors: Vec<i32> = pids.iter().copied().filter(|&pid| is_alive(pid)).collect();
    for &pid in &survivors {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    assert!(
        all_gone,
        "alive after SIGKILL of lit-mux and its guard: {survivors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_child_and_exits_0_within_6_s() {
    let home = TestHome::new();
    let mut server = home.start(&[]);
    let pids = start_children(&server).await;
    server.signal(Signal::SIGTERM);
    let (status, took) = server
        .wait_exit(Duration::from_secs(10))
        .expect("lit-mux exits");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let survivors: Vec<_> = pids.iter().copied().filter(|&pid| is_alive(pid)).collect();
    assert!(survivors.is_empty(), "alive after shutdown: {survivors:?}");
    // Children were stopped concurrently: one stubborn child costs ~3 s, not one per child.
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Adds and removes servers in a loop, failing and healthy ones, with tool calls running
/// alongside: lit-mux's descriptors return to their baseline and no zombie is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_300_add_remove_cycles_leaks_nothing() {
    let home = TestHome::new();
    let server = home.start(&[]);
    let lit_mux = server.pid();
    let sockets = |listing: &[String]| listing.iter().filter(|fd| fd.contains("socket:")).count();
    let idle_sockets = sockets(&fd_listing(lit_mux));
    // A long-lived server that the concurrent calls use throughout.
    let (status, body) = server
        .post_json("/mcp/servers", &fixture_server("steady", "healthy", &[]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(wait_until(Duration::from_secs(2), || sockets(&fd_listing(
        lit_mux
    )) == idle_sockets));
    let baseline = fd_listing(lit_mux);

    let calls = async {
        let mut done = 0;
        for i in 0..150 {
            let (status, body) = server
                .post_json("/tools/steady/echo", &json!({"message": i.to_string()}))
                .await;
            assert_eq!(status, 200, "{body}");
            done += 1;
        }
        done
    };
    let kinds: [(&str, u16); 4] = [
        ("healthy", 200),
        ("exit-at-once", 502),
        ("grandchild", 200),
        ("noise-stdout", 200),
    ];
    let churn = async {
        let started = Instant::now();
        for cycle in 0..300 {
            let (mode, expected) = kinds[cycle % kinds.len()];
            let name = format!("churn-{}", cycle % 3);
            let (status, body) = server
                .post_json("/mcp/servers", &fixture_server(&name, mode, &[]))
                .await;
            assert_eq!(status, expected, "cycle {cycle} ({mode}): {body}");
            if status == 200 {
                let (status, body) = server.delete_json(&format!("/mcp/servers/{name}")).await;
                assert_eq!(status, 200, "{body}");
            }
        }
        started.elapsed()
    };
    let (done, took) = tokio::join!(calls, churn);
    assert_eq!(done, 150);
    let health = server.get_json("/mcp/health").await;
    assert_eq!(
        health["statistics"]["servers_created"],
        Value::from(1 + 225)
    );
    assert_eq!(health["statistics"]["servers_failed"], 75);
    assert_eq!(health["statistics"]["servers_removed"], 225);
    assert_eq!(
        health["resources"]["children"], 1,
        "only `steady` is left: {health}"
    );
    assert!(
        wait_until(Duration::from_secs(3), || sockets(&fd_listing(lit_mux))
            == idle_sockets
            && fd_listing(lit_mux) == baseline),
        "descriptors {:?}\nbaseline {baseline:?}",
        fd_listing(lit_mux)
    );
    let children: Vec<_> = processes::all()
        .into_iter()
        .filter(|p| p.parent == lit_mux && !is_orphan_guard(p.pid))
        .collect();
    assert_eq!(
        children.len(),
        1,
        "one child (steady), no zombie: {children:?}"
    );
    assert!(children.iter().all(|p| p.state != 'Z'));
    assert!(in_group(children[0].pid).len() == 1);
    eprintln!("300 churn cycles took {took:?}");
}
