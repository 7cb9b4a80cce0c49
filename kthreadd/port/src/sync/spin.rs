//! The spinlock family: one lock type, [`SpinLock<T, G>`](SpinLock), whose
//! guard policy `G` decides what is turned off while it is held (Asterinas'
//! `SpinLock<T, G>` has the same shape).
//!
//! * [`IrqSave`] (the default): interrupts and preemption, through the
//!   installed port (Linux `spin_lock_irqsave`). For anything an interrupt
//!   handler or a timer callback may touch.
//! * [`PreemptOff`]: preemption only, through the port (Linux `spin_lock`).
//! * A port adds policies of its own for locks it needs before the port is
//!   installed (the testkernel's allocator and console do).
//!
//! Every lock records the call site that took it. A CPU that spins on one
//! lock for [`SPIN_WARN_NS`] prints one warning naming the lock, the
//! owner's CPU (when the policy knows it) and the owner's call site, with a
//! stack dump, so a deadlock shows up in the log instead of as a silent
//! hang. The warning needs a clock and an emergency console that bypasses
//! every lock: a port provides them with [`set_lock_env`] at boot; without
//! one a spinner spins silently.

use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::panic::Location;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use super::atomic::spin_loop;

/// How long a CPU spins on one lock before it warns (2 s: far beyond any
/// legitimate hold time, short enough to show up before a test's watchdog
/// fires).
pub const SPIN_WARN_NS: u64 = 2_000_000_000;

/// Spins between two looks at the clock while waiting (the clock may be a
/// port call; the lock word is read every spin).
const SPINS_PER_CLOCK_CHECK: u32 = 1 << 10;

/// What a lock turns off while held, and how it is restored.
pub trait GuardPolicy: 'static {
    /// State saved on entry, given back on exit.
    type Saved: Copy;
    /// Enter the lock's section (before the lock word is taken).
    fn enter() -> Self::Saved;
    /// Leave it (after the lock word is released).
    fn exit(saved: Self::Saved);
    /// The taking CPU's number plus one, for contention reports; 0 when the
    /// policy does not know it cheaply.
    #[inline(always)]
    fn owner_tag() -> u32 {
        0
    }
}

/// Interrupts and preemption off while held, through the port (Linux
/// `spin_lock_irqsave`). The default policy.
pub enum IrqSave {}

/// What an [`IrqSave`] guard undoes when it is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqSaved {
    /// Interrupts were off before the lock was taken: preemption on again.
    WereOff,
    /// Interrupts were on: preemption and interrupts on again.
    WereOn,
    /// Taken inside an [`IrqSection`] ([`SpinLock::lock_in`]), which undoes
    /// its own entry: nothing.
    InSection,
}

impl GuardPolicy for IrqSave {
    type Saved = IrqSaved;
    #[inline(always)]
    fn enter() -> IrqSaved {
        if crate::local::lock_enter() { IrqSaved::WereOn } else { IrqSaved::WereOff }
    }
    #[inline(always)]
    fn exit(saved: IrqSaved) {
        match saved {
            IrqSaved::WereOff => crate::local::lock_exit(false),
            IrqSaved::WereOn => crate::local::lock_exit(true),
            IrqSaved::InSection => {}
        }
    }
}

/// Interrupts and preemption off on the calling CPU while it lives, as an
/// [`IrqSave`] lock's guard keeps them, without a lock (Linux
/// `local_irq_save` with the preemption count raised). Locks taken inside
/// it with [`SpinLock::lock_in`] skip the port's section calls, which
/// under TCG cost several times the lock word itself. It stays on the CPU
/// that made it (not `Send`).
pub struct IrqSection {
    irqs_were_on: bool,
    _this_cpu: PhantomData<*const ()>,
}

impl IrqSection {
    /// Enter the section (the port's `lock_enter`).
    ///
    /// Context: any.
    #[inline]
    pub fn enter() -> IrqSection {
        IrqSection { irqs_were_on: crate::local::lock_enter(), _this_cpu: PhantomData }
    }
}

impl Drop for IrqSection {
    #[inline]
    fn drop(&mut self) {
        crate::local::lock_exit(self.irqs_were_on);
    }
}

/// Preemption off while held, through the port (Linux `spin_lock`): only
/// for data no interrupt handler or timer callback touches.
pub enum PreemptOff {}

impl GuardPolicy for PreemptOff {
    type Saved = ();
    #[inline]
    fn enter() {
        crate::local::preempt_disable()
    }
    #[inline]
    fn exit(_: ()) {
        crate::local::preempt_enable()
    }
}

/// What the contention warning needs from the host kernel.
pub trait LockEnv: Sync {
    /// Monotonic nanoseconds.
    fn now_ns(&self) -> u64;
    /// The calling CPU.
    fn cpu_id(&self) -> usize;
    /// Print a line without taking any lock (the contended lock may be the
    /// console's).
    fn emergency_line(&self, line: fmt::Arguments<'_>);
    /// Print a backtrace of the caller.
    fn dump_stack(&self);
}

static ENV: spin::Once<&'static dyn LockEnv> = spin::Once::new();

/// Give the spinlocks a clock and an emergency console for contention
/// warnings (once, as early in boot as possible).
pub fn set_lock_env(env: &'static dyn LockEnv) {
    ENV.call_once(|| env);
}

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1 << 31;

/// The lock word (`LOCKED | owner tag`) and the owner's call site.
struct RawSpin {
    word: AtomicU32,
    owner: AtomicPtr<Location<'static>>,
}

impl RawSpin {
    const fn new() -> Self {
        RawSpin { word: AtomicU32::new(UNLOCKED), owner: AtomicPtr::new(core::ptr::null_mut()) }
    }

    #[inline(always)]
    fn try_acquire(&self, tag: u32) -> bool {
        self.word.compare_exchange(UNLOCKED, LOCKED | tag, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    #[inline(always)]
    fn acquire(&self, tag: u32, site: &'static Location<'static>, name: &str) {
        if !self.try_acquire(tag) {
            self.acquire_slow(tag, name);
        }
        self.owner.store(site as *const Location<'static> as *mut Location<'static>, Ordering::Relaxed);
    }

    #[cold]
    fn acquire_slow(&self, tag: u32, name: &str) {
        let mut spins: u32 = 0;
        let mut since: Option<u64> = None;
        let mut warned = false;
        loop {
            while self.word.load(Ordering::Relaxed) != UNLOCKED {
                spin_loop();
                spins = spins.wrapping_add(1);
                if !warned
                    && spins.is_multiple_of(SPINS_PER_CLOCK_CHECK)
                    && let Some(env) = ENV.get()
                {
                    let now = env.now_ns();
                    let start = *since.get_or_insert(now);
                    if now.saturating_sub(start) > SPIN_WARN_NS {
                        warned = true;
                        self.warn(*env, name, now - start);
                    }
                }
            }
            if self.try_acquire(tag) {
                return;
            }
        }
    }

    #[cold]
    fn warn(&self, env: &dyn LockEnv, name: &str, waited_ns: u64) {
        let word = self.word.load(Ordering::Relaxed);
        let owner = self.owner.load(Ordering::Relaxed);
        // SAFETY: `owner` is null or was stored from a `&'static Location`.
        let site = unsafe { owner.as_ref() };
        let tag = word & !LOCKED;
        env.emergency_line(format_args!(
            "# WARNING: cpu {} spinning on lock {}{} for over {} ms; held by {} since {}",
            env.cpu_id(),
            if name.is_empty() { "at " } else { name },
            if name.is_empty() { alloc::format!("{:p}", self) } else { alloc::string::String::new() },
            waited_ns / 1_000_000,
            match tag.checked_sub(1) {
                Some(cpu) => alloc::format!("cpu {cpu}"),
                None => alloc::string::String::from("a CPU"),
            },
            match site {
                Some(l) => alloc::format!("{}:{}", l.file(), l.line()),
                None => alloc::string::String::from("an unknown site"),
            },
        ));
        env.dump_stack();
    }

    #[inline(always)]
    fn release(&self) {
        self.word.store(UNLOCKED, Ordering::Release);
    }

    fn tag(&self) -> Option<u32> {
        let w = self.word.load(Ordering::Relaxed);
        (w != UNLOCKED).then_some(w & !LOCKED)
    }
}

/// A spinlock with guard policy `G` (default [`IrqSave`]). Never sleep
/// while holding one.
pub struct SpinLock<T: ?Sized, G: GuardPolicy = IrqSave> {
    raw: RawSpin,
    name: &'static str,
    /// Place in the lock order (0: not checked); see [`super::rank`]. Read
    /// only by the debug-build check.
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    rank: u8,
    _policy: PhantomData<fn() -> G>,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serializes every access to `data`, so sharing the lock is
// safe whenever the data may be sent between contexts.
unsafe impl<T: ?Sized + Send, G: GuardPolicy> Sync for SpinLock<T, G> {}
// SAFETY: moving the lock moves the data.
unsafe impl<T: ?Sized + Send, G: GuardPolicy> Send for SpinLock<T, G> {}

impl<T> SpinLock<T> {
    /// A new unlocked lock with the default policy ([`IrqSave`]).
    pub const fn new(data: T) -> Self {
        Self::named("", data)
    }
}

impl<T, G: GuardPolicy> SpinLock<T, G> {
    /// A new unlocked lock; `name` appears in contention warnings.
    pub const fn named(name: &'static str, data: T) -> Self {
        Self::ranked(name, 0, data)
    }

    /// A new unlocked lock with a place in the lock order: in debug builds,
    /// taking it while holding a lock of the same or a higher rank panics
    /// with both names (see [`super::rank`]).
    pub const fn ranked(name: &'static str, rank: u8, data: T) -> Self {
        assert!((rank as u32) < u32::BITS, "lock ranks are 1..=31");
        SpinLock { raw: RawSpin::new(), name, rank, _policy: PhantomData, data: UnsafeCell::new(data) }
    }

    /// Consume the lock, returning the data.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized, G: GuardPolicy> SpinLock<T, G> {
    /// Take the lock: enter the policy's section, then spin for the word.
    ///
    /// Context: any; the holder must not sleep.
    #[track_caller]
    #[inline]
    pub fn lock(&self) -> SpinLockGuard<'_, T, G> {
        let saved = G::enter();
        #[cfg(debug_assertions)]
        super::rank::acquire(self.rank, self.name, Location::caller());
        self.raw.acquire(G::owner_tag(), Location::caller(), self.name);
        SpinLockGuard { lock: self, saved }
    }

    /// Take the lock only if it is free.
    #[track_caller]
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T, G>> {
        let saved = G::enter();
        if self.raw.try_acquire(G::owner_tag()) {
            let site = Location::caller();
            #[cfg(debug_assertions)]
            super::rank::acquire(self.rank, self.name, site);
            self.raw.owner.store(site as *const Location<'static> as *mut Location<'static>, Ordering::Relaxed);
            Some(SpinLockGuard { lock: self, saved })
        } else {
            G::exit(saved);
            None
        }
    }

    /// Mutable access without locking (the `&mut` proves exclusivity).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Is it held right now (a racy snapshot, for diagnostics)?
    pub fn is_locked(&self) -> bool {
        self.raw.tag().is_some()
    }

    /// The CPU holding it, when the policy records it (diagnostics).
    pub fn holder_cpu(&self) -> Option<usize> {
        self.raw.tag()?.checked_sub(1).map(|c| c as usize)
    }

    /// The call site that last took it (diagnostics).
    pub fn owner_site(&self) -> Option<&'static Location<'static>> {
        // SAFETY: null or stored from a `&'static Location`.
        unsafe { self.raw.owner.load(Ordering::Relaxed).as_ref() }
    }

    /// Release a lock whose guard was forgotten (a context switch hands a
    /// run-queue lock from one context to the next this way).
    ///
    /// # Safety
    /// The lock must be held through a guard that was forgotten; the caller
    /// also undoes what the policy's `enter` did, as the guard would have.
    pub unsafe fn force_unlock(&self) {
        self.raw.release();
    }

    /// Access the data without locking.
    ///
    /// # Safety
    /// Only for emergency paths (panic, exception reports) where the caller
    /// owns the machine and nothing else runs.
    #[allow(clippy::mut_from_ref)] // the unsafe contract replaces the borrow rules
    pub unsafe fn force_get(&self) -> &mut T {
        // SAFETY: the caller guarantees no concurrent access.
        unsafe { &mut *self.data.get() }
    }

    pub(super) fn addr(&self) -> *const u8 {
        self as *const Self as *const u8
    }
}

impl<T: ?Sized> SpinLock<T, IrqSave> {
    /// Take the lock inside `section`, whose interrupts-off, preemption-off
    /// state is the one [`SpinLock::lock`] would enter: the guard holds only
    /// the lock word, and cannot outlive the section.
    ///
    /// Context: the section's CPU; the holder must not sleep.
    #[track_caller]
    #[inline]
    pub fn lock_in<'a>(&'a self, _section: &'a IrqSection) -> SpinLockGuard<'a, T, IrqSave> {
        #[cfg(debug_assertions)]
        super::rank::acquire(self.rank, self.name, Location::caller());
        self.raw.acquire(IrqSave::owner_tag(), Location::caller(), self.name);
        SpinLockGuard { lock: self, saved: IrqSaved::InSection }
    }
}

/// Guard of a [`SpinLock`]: the lock is held while it lives.
pub struct SpinLockGuard<'a, T: ?Sized, G: GuardPolicy = IrqSave> {
    lock: &'a SpinLock<T, G>,
    saved: G::Saved,
}

/// A proof that a particular lock is held, for [`super::LockedBy`]. Made
/// only from a live guard and borrowed from it; never crosses contexts.
#[derive(Clone, Copy)]
pub struct Held<'a> {
    lock: *const u8,
    _guard: PhantomData<&'a ()>,
}

impl Held<'_> {
    pub(super) fn lock_addr(&self) -> *const u8 {
        self.lock
    }
}

impl<'a, T: ?Sized, G: GuardPolicy> SpinLockGuard<'a, T, G> {
    /// A proof that this guard's lock is held (the data stays readable).
    pub fn held(&self) -> Held<'_> {
        Held { lock: self.lock.addr(), _guard: PhantomData }
    }

    /// The data and a proof that the lock is held, together, so data
    /// [`super::LockedBy`] this lock can be changed beside the lock's own.
    pub fn split(&mut self) -> (&mut T, Held<'_>) {
        let held = Held { lock: self.lock.addr(), _guard: PhantomData };
        // SAFETY: the guard proves the lock is held by this context, and
        // the returned borrow keeps the guard (and the lock) alive.
        (unsafe { &mut *self.lock.data.get() }, held)
    }
}

impl<T: ?Sized, G: GuardPolicy> Deref for SpinLockGuard<'_, T, G> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized, G: GuardPolicy> DerefMut for SpinLockGuard<'_, T, G> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized, G: GuardPolicy> Drop for SpinLockGuard<'_, T, G> {
    #[inline(always)]
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        super::rank::release(self.lock.rank);
        self.lock.raw.release();
        G::exit(self.saved);
    }
}
