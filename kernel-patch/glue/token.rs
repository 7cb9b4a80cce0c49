//! Where the port finds the `CleanLockToken` that Redox's ordered locks ask for.
//!
//! Redox checks its lock order at compile time (`crate::sync::ordered`): locking a
//! `ContextLock` (level 4) or a per-CPU wake-up list takes a token of a lower level, and the
//! root of every token is one `CleanLockToken`, which claims "this thread of execution holds no
//! Redox lock". Redox creates one where that is evident (a syscall entry, an interrupt handler,
//! `kmain`, a new context's entry) and passes it down by `&mut`; whoever holds a guard has the
//! token borrowed, so the compiler refuses a second lock of the wrong level.
//!
//! The subsystem reaches the port through `kthreadd`'s `Port` trait, whose methods take no
//! token. This module gives each port call the token of whoever is running it:
//!
//! * **Lent tokens.** Redox code that has a token and calls into the subsystem lends it for the
//!   length of that call with [`lend`]: the hooks in `tick()` (port timers), the wake-up IPI
//!   handler (`call_on_cpu` functions), `switch()` (the workqueue's scheduler callbacks, a CPU's
//!   first switch), `kmain` (starting the subsystem) and the `sys:kthread` read. The per-CPU
//!   slot holds a pointer to the lender's token. None of these calls can switch away from the
//!   CPU (the callbacks run in interrupt context or with the preempt count raised, and the
//!   port's `schedule` refuses to switch with a token lent), so the lender's frame and CPU
//!   outlive every use of the pointer.
//! * **A kernel thread's own token.** A context spawned by the port creates its token once, at
//!   its entry (`port::kthread_main`), where it holds no lock exactly as a syscall entry does,
//!   and keeps it in its port record (`Task`) for its whole life. A port call made by that thread
//!   outside any lent scope borrows it from there and puts it back when done; a second borrow
//!   while the first is out (a port call re-entered from inside one) panics instead of making a
//!   second token. The thread's context switches (`schedule`) take place with the token borrowed,
//!   as Redox's own blocking syscalls switch with theirs.
//! * Any other caller (a user context's syscall, a Redox kernel context) has its own token in
//!   its own frame: it must lend it with [`lend`] around its calls into the subsystem. Without
//!   one the call panics, naming the missing token, rather than invent one.
//!
//! The subsystem's own spinlocks and the glue's `spin` mutexes are not Redox locks and do not
//! change what a token claims: they are always taken outside Redox's locks (no glue path calls
//! back into the subsystem with a Redox guard alive, and Redox code never calls the subsystem
//! with one), and the glue's own mutexes are leaves that are never held across a Redox lock.

use core::{cell::Cell, ptr::NonNull};

use crate::{percpu::PercpuBlock, sync::CleanLockToken};

/// The per-CPU lending slot ([`super::KthreadPercpu::lent`]).
#[derive(Clone, Copy)]
pub enum Slot {
    /// No token lent on this CPU: port calls use the running kernel thread's own token.
    Empty,
    /// A lender's token, valid until the lender's [`lend`] returns.
    Lent(NonNull<CleanLockToken>),
    /// The lent token is borrowed by a port call right now.
    InUse,
    /// A context's own token (a system call's, whose frame moves with the context) lent with
    /// [`lend_blocking`] for calls that may block: `schedule` takes the loan off this CPU for
    /// the switch and puts it back on the CPU the context resumes on.
    LentBlocking(NonNull<CleanLockToken>),
    /// The blocking loan's token is borrowed by a port call right now.
    InUseBlocking,
}

/// The state of a kernel thread's own token in its port record.
pub enum Own {
    /// Not a port-spawned context (or not started yet): it has no token of its own here.
    None,
    /// The token, not borrowed.
    Here(CleanLockToken),
    /// Borrowed by a port call of this thread.
    Out,
}

/// The calling CPU's slot.
fn slot() -> &'static Cell<Slot> {
    &PercpuBlock::current().kthread.lent
}

/// Is a token lent on this CPU by a caller that must not switch away (a Redox hook's call into
/// the subsystem)? A blocking loan ([`lend_blocking`]) does not count: its caller may block.
pub fn lent_here() -> bool {
    matches!(slot().get(), Slot::Lent(_) | Slot::InUse)
}

/// Lend the calling context's own `token` (a system call's) to the port calls `f` makes, which
/// may block: the context may switch away inside `f` and resume on another CPU, and its
/// token's frame goes with it. Only from a context whose token lives in its own frame, with this
/// CPU's slot empty.
pub fn lend_blocking<R>(token: &mut CleanLockToken, f: impl FnOnce() -> R) -> R {
    let before = slot().replace(Slot::LentBlocking(NonNull::from(token)));
    assert!(
        matches!(before, Slot::Empty),
        "kthread: lend_blocking inside another loan"
    );
    let r = f();
    // Perhaps another CPU than at the start: this one's slot holds the loan now.
    slot().set(Slot::Empty);
    r
}

/// For `schedule`: take this CPU's blocking loan, if it has one, off the CPU for the switch.
pub fn take_blocking_loan() -> Option<NonNull<CleanLockToken>> {
    match slot().get() {
        Slot::LentBlocking(ptr) => {
            slot().set(Slot::Empty);
            Some(ptr)
        }
        _ => None,
    }
}

/// For `schedule`: the context resumed (on this CPU); its loan is this CPU's again.
pub fn restore_blocking_loan(ptr: NonNull<CleanLockToken>) {
    slot().set(Slot::LentBlocking(ptr));
}

/// Lend `token` to the port calls that `f` makes on this CPU. `f` must not switch away (see the
/// module documentation); the port's `schedule`, `yield_now` and `exit_current` panic if asked
/// to while a token is lent.
pub fn lend<R>(token: &mut CleanLockToken, f: impl FnOnce() -> R) -> R {
    let cell = slot();
    let before = cell.replace(Slot::Lent(NonNull::from(token)));
    let r = f();
    // The same CPU: `f` did not switch away, so `cell` is still this CPU's slot.
    cell.set(before);
    r
}

/// Run `f` with the caller's token: the one lent on this CPU, else the running kernel thread's
/// own. Panics if the token is already borrowed (a re-entered port call) or there is none.
pub fn with_token<R>(f: impl FnOnce(&mut CleanLockToken) -> R) -> R {
    let cell = slot();
    match cell.replace(Slot::InUse) {
        Slot::Lent(mut ptr) => {
            // SAFETY: the pointer came from a `&mut CleanLockToken` that [`lend`] holds for the
            // length of its call, on this CPU, and `f` of that call cannot switch away, so the
            // token is alive; `InUse` in the slot makes this the only borrow until it is put
            // back below.
            let r = f(unsafe { ptr.as_mut() });
            cell.set(Slot::Lent(ptr));
            r
        }
        Slot::LentBlocking(mut ptr) => {
            cell.set(Slot::InUseBlocking);
            // SAFETY: as for `Lent`: the token lives in the frame of the context running here,
            // which `f` (a port call that does not switch; `schedule` takes the loan off first)
            // cannot leave.
            let r = f(unsafe { ptr.as_mut() });
            cell.set(Slot::LentBlocking(ptr));
            r
        }
        Slot::InUse | Slot::InUseBlocking => {
            panic!("kthread: port call re-entered while this CPU's lent lock token is in use")
        }
        Slot::Empty => {
            cell.set(Slot::Empty);
            own_token(f)
        }
    }
}

/// Borrow the running kernel thread's own token (the slot was empty). `f` may switch away and
/// come back on another CPU: the token belongs to the thread, not to the CPU.
fn own_token<R>(f: impl FnOnce(&mut CleanLockToken) -> R) -> R {
    let Some(task) = super::current_port_task() else {
        panic!(
            "kthread: port call without a lock token: a context not spawned by the port must lend \
             its token (kthread::lend)"
        );
    };
    let taken = core::mem::replace(&mut *task.token.lock(), Own::Out);
    let mut token = match taken {
        Own::Here(t) => t,
        Own::Out => panic!("kthread: port call re-entered while this thread's lock token is out"),
        Own::None => {
            *task.token.lock() = Own::None;
            panic!("kthread: port call without a lock token in a context with none of its own")
        }
    };
    let r = f(&mut token);
    *task.token.lock() = Own::Here(token);
    r
}
