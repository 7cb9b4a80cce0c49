//! The harness's leak check (`ktests::leak`) on the host port: nothing is
//! reported when nothing leaks, and what the `leak_demo` cases leave behind
//! is named (kernel threads, armed timers and work items; the host port has
//! no memory counters, so the heap and frames are checked only in the guest,
//! by the runner's test `leak_check`).

use ktests::harness::all_cases;
use ktests::rng::Rng;
use ktests::{Args, Ctx, leak};

#[test]
fn the_leak_check_is_quiet_when_nothing_leaks_and_names_what_leak_demo_leaves() {
    kport::host::install_host_port(4);
    kthreadd::kthread::init().expect("kthreadd");
    workqueue::init().expect("workqueue");
    leak::warm_up();

    let base = leak::baseline();
    let quiet = leak::check("leak_demo", &base);
    assert_eq!(quiet.leaked, None, "a leak reported when nothing ran ({})", quiet.figures);

    let args = Args { tests: vec!["leak_demo".into()], ..Default::default() };
    let cases: Vec<_> = all_cases().iter().filter(|c| c.suite == "leak_demo").collect();
    assert_eq!(cases.len(), 4, "the leak_demo cases are not all registered");
    for c in cases {
        let mut ctx = Ctx { seed: 1, rng: Rng::new(1, c.name), cpus: 4, args: args.clone() };
        if let Err(e) = (c.func)(&mut ctx) {
            panic!("leak_demo::{} failed: {e:?}", c.name);
        }
    }
    let found = leak::check("leak_demo", &base);
    let what = found.leaked.unwrap_or_else(|| panic!("nothing reported after leak_demo ({})", found.figures));
    assert!(what.contains("kthreads +1 [leak-demo]"), "the thread is not named: {what}");
    assert!(what.contains("timers +1"), "the armed timer is not counted: {what}");
    assert!(what.contains("work items +2 [leak-demo: 2]"), "the queued items are not counted: {what}");
}
