//! Incremental KTAP v1 parser.
//!
//! Lines are fed one at a time as they arrive from the guest's serial port
//! ([`Parser::feed`]); each is classified so the caller can echo it (and symbolize
//! backtraces) while the run is still going. [`Parser::finish`] closes every open
//! level and returns the collected results, benchmarks and problems.
//!
//! Nesting follows the KUnit convention: four spaces of indentation per level.
//! Lines that are not KTAP (firmware noise, partial lines) are classified as
//! [`Line::Garbage`] and otherwise ignored.

use serde::Serialize;

/// The outcome of one test as reported by its result line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// `ok`
    #[serde(rename = "ok")]
    Ok,
    /// `not ok` (without a SKIP or TIMEOUT directive)
    #[serde(rename = "not ok")]
    NotOk,
    /// `# SKIP` directive.
    #[serde(rename = "skip")]
    Skip,
    /// `# TIMEOUT` directive (the guest's own watchdog fired).
    #[serde(rename = "timeout")]
    Timeout,
}

impl Status {
    /// Whether this status counts as a failure.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::NotOk | Status::Timeout)
    }
}

/// One result line, with its position in the test tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestResult {
    /// Name of the top-level subtest (suite) the test belongs to.
    pub suite: String,
    /// Name of the test inside its suite (nested levels joined with `.`).
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// Text of the directive (`# ...`) if any.
    pub reason: Option<String>,
    /// Nesting depth of the result line (0 = top level).
    #[serde(skip)]
    pub depth: usize,
    /// False when this result line closes a subtest (it summarizes its children).
    #[serde(skip)]
    pub leaf: bool,
}

/// One `# bench:` diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bench {
    /// Benchmark name (first word after `bench:`).
    pub name: String,
    /// The `key=value` pairs in order of appearance.
    pub fields: Vec<(String, String)>,
}

/// Classification of one line of serial output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `KTAP version 1` (or `TAP version N`).
    Version,
    /// A plan line `1..N`.
    Plan(usize),
    /// `# Subtest: NAME`.
    Subtest(String),
    /// A result line; the index refers to [`Summary::results`].
    Result(usize),
    /// A `# bench:` line; the index refers to [`Summary::benches`].
    Bench(usize),
    /// A torture case's figures line, `# torture: CASE key=value ...`; the
    /// index refers to [`Summary::tortures`].
    Torture(usize),
    /// `# PANIC ...` (the text after `#`).
    Panic(String),
    /// `# EXCEPTION: ...` (the text after `#`).
    Exception(String),
    /// `# backtrace:`
    Backtrace,
    /// A backtrace frame `#  N: 0x<hex>`.
    Frame(u64),
    /// A register dump line containing `rip=0x…`.
    Registers(u64),
    /// `# ktest: error: ...` from the guest's command-line parser.
    GuestError(String),
    /// Any other diagnostic line.
    Diagnostic,
    /// Empty line.
    Blank,
    /// Not KTAP.
    Garbage,
}

/// A condition that fails the run without being a `not ok` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// One-line description.
    pub message: String,
    /// How many missing results this problem stands for (0 for other problems).
    pub weight: usize,
}

/// Everything the parser collected.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// All result lines, in order.
    pub results: Vec<TestResult>,
    /// All benchmark lines, in order.
    pub benches: Vec<Bench>,
    /// The torture cases' figures lines, in order (name: the case).
    pub tortures: Vec<Bench>,
    /// Structural problems: missing results, panics, exceptions, guest errors.
    pub problems: Vec<Problem>,
    /// The top-level plan, if one was seen.
    pub top_plan: Option<usize>,
    /// Number of lines classified as garbage.
    pub garbage: usize,
}

impl Summary {
    /// Leaf results: individual test cases rather than suite summaries.
    pub fn leaves(&self) -> impl Iterator<Item = &TestResult> {
        self.results.iter().filter(|r| r.leaf)
    }

    /// Counts of (passed, failed, skipped) leaf tests.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for r in self.leaves() {
            match r.status {
                Status::Ok => c.0 += 1,
                Status::NotOk | Status::Timeout => c.1 += 1,
                Status::Skip => c.2 += 1,
            }
        }
        c
    }

    /// Whether the KTAP output shows any failure (failed test or problem).
    pub fn has_failure(&self) -> bool {
        !self.problems.is_empty() || self.results.iter().any(|r| r.status.is_failure())
    }
}

#[derive(Debug, Default)]
struct Level {
    name: Option<String>,
    plan: Option<usize>,
    count: usize,
    /// A plan or result was seen at this level.
    has_content: bool,
    /// Index of the first result recorded while this level was open.
    first_result: usize,
}

impl Level {
    /// A level that only saw a version line carries nothing to check.
    fn is_real(&self) -> bool {
        self.has_content || self.name.is_some()
    }
}

/// The incremental parser. Feed it lines with [`Parser::feed`].
#[derive(Debug)]
pub struct Parser {
    levels: Vec<Level>,
    out: Summary,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser in its initial state.
    pub fn new() -> Self {
        Parser { levels: vec![Level::default()], out: Summary::default() }
    }

    /// Results and benchmarks collected so far.
    pub fn summary(&self) -> &Summary {
        &self.out
    }

    /// Progress for display: (top-level results so far, top-level plan, current suite).
    pub fn progress(&self) -> (usize, Option<usize>, Option<&str>) {
        let suite = self.levels.get(1).and_then(|l| l.name.as_deref());
        (self.levels[0].count, self.levels[0].plan, suite)
    }

    /// Classify one line (without its line terminator) and update the state.
    pub fn feed(&mut self, raw: &str) -> Line {
        let cleaned = clean(raw);
        let line = cleaned.as_str();
        let indent = line.len() - line.trim_start_matches(' ').len();
        let depth = indent / 4;
        let body = line[indent..].trim_end();
        if body.is_empty() {
            return Line::Blank;
        }
        if body.starts_with("KTAP version ") || body.starts_with("TAP version ") {
            self.open(depth);
            return Line::Version;
        }
        if let Some(n) = body.strip_prefix("1..").and_then(|n| n.parse::<usize>().ok()) {
            self.open(depth);
            let level = &mut self.levels[depth];
            level.plan = Some(n);
            level.has_content = true;
            return Line::Plan(n);
        }
        if let Some(line) = self.result_line(depth, body) {
            return line;
        }
        match body.strip_prefix('#') {
            Some(text) => self.diagnostic(depth, text.trim()),
            None => {
                self.out.garbage += 1;
                Line::Garbage
            }
        }
    }

    fn diagnostic(&mut self, depth: usize, text: &str) -> Line {
        if let Some(name) = text.strip_prefix("Subtest:") {
            let name = name.trim().to_string();
            self.open(depth);
            self.levels[depth].name = Some(name.clone());
            return Line::Subtest(name);
        }
        if let Some(rest) = text.strip_prefix("bench:") {
            let mut words = rest.split_whitespace();
            let Some(name) = words.next() else {
                return Line::Diagnostic;
            };
            let fields = words.filter_map(|w| w.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            self.out.benches.push(Bench { name: name.to_string(), fields });
            return Line::Bench(self.out.benches.len() - 1);
        }
        if let Some(rest) = text.strip_prefix("torture:") {
            // `torture: CASE key=value ...`; other torture diagnostics use
            // their own prefixes (`torture-note:`, `torture-violation:`).
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or("");
            let fields: Vec<(String, String)> =
                words.filter_map(|w| w.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            if name.is_empty() || name.contains('=') || fields.is_empty() {
                return Line::Diagnostic;
            }
            self.out.tortures.push(Bench { name: name.to_string(), fields });
            return Line::Torture(self.out.tortures.len() - 1);
        }
        if text.starts_with("PANIC") {
            self.problem(text.to_string(), 0);
            return Line::Panic(text.to_string());
        }
        if text.starts_with("EXCEPTION") {
            self.problem(text.to_string(), 0);
            return Line::Exception(text.to_string());
        }
        if text == "backtrace:" {
            return Line::Backtrace;
        }
        if let Some(addr) = parse_frame(text) {
            return Line::Frame(addr);
        }
        if let Some(addr) = rip_of(text) {
            return Line::Registers(addr);
        }
        if let Some(msg) = text.strip_prefix("ktest: error:") {
            let msg = format!("guest error: {}", msg.trim());
            self.problem(msg.clone(), 0);
            return Line::GuestError(msg);
        }
        Line::Diagnostic
    }

    fn result_line(&mut self, depth: usize, body: &str) -> Option<Line> {
        let (failed, rest) = if let Some(r) = body.strip_prefix("ok ") {
            (false, r)
        } else if let Some(r) = body.strip_prefix("not ok ") {
            (true, r)
        } else {
            return None;
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let rest = &rest[digits..];
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return None;
        }
        let rest = rest.trim_start();
        let rest = rest.strip_prefix("- ").unwrap_or(rest);
        let hash = if rest.starts_with('#') { Some(0) } else { rest.find(" #").map(|i| i + 1) };
        let (name, directive) = match hash {
            Some(i) => (rest[..i].trim(), Some(rest[i + 1..].trim())),
            None => (rest.trim(), None),
        };
        let upper = directive.map(|d| d.to_ascii_uppercase());
        let (status, reason) = match (upper.as_deref(), directive) {
            (Some(u), Some(d)) if u.starts_with("SKIP") => (Status::Skip, non_empty(d[4..].trim())),
            (Some(u), Some(d)) if u.starts_with("TIMEOUT") => (Status::Timeout, non_empty(d)),
            (_, d) => (if failed { Status::NotOk } else { Status::Ok }, d.and_then(non_empty)),
        };
        Some(Line::Result(self.record(depth, name, status, reason)))
    }

    fn record(&mut self, depth: usize, name: &str, status: Status, reason: Option<String>) -> usize {
        // A result at `depth` closes any subtest at `depth + 1` (its children).
        let mut leaf = true;
        while self.levels.len() > depth + 1 {
            let closes_child = self.levels.len() == depth + 2;
            let level = self.levels.pop().expect("level");
            if closes_child && level.is_real() {
                leaf = false;
                self.close(level, Some(name));
            } else {
                self.close(level, None);
            }
        }
        self.push_to(depth);
        let suite = if depth == 0 { name.to_string() } else { self.levels[1].name.clone().unwrap_or_default() };
        let mut path: Vec<&str> =
            self.levels[2.min(depth + 1)..=depth].iter().filter_map(|l| l.name.as_deref()).collect();
        path.push(name);
        let name = path.join(".");
        let level = &mut self.levels[depth];
        level.count += 1;
        level.has_content = true;
        self.out.results.push(TestResult { suite, name, status, reason, depth, leaf });
        self.out.results.len() - 1
    }

    /// Make `depth` the innermost open level: close deeper levels whose content is
    /// finished (a new header at a level that already has results starts a new
    /// subtest) and push implicit levels as needed.
    fn open(&mut self, depth: usize) {
        while self.levels.len() > depth + 1 {
            let level = self.levels.pop().expect("level");
            self.close(level, None);
        }
        if depth > 0 && self.levels.len() == depth + 1 && self.levels[depth].has_content {
            let level = self.levels.pop().expect("level");
            self.close(level, None);
        }
        self.push_to(depth);
    }

    /// Push implicit levels until `depth` exists.
    fn push_to(&mut self, depth: usize) {
        while self.levels.len() < depth + 1 {
            self.levels.push(Level { first_result: self.out.results.len(), ..Level::default() });
        }
    }

    /// Check a finished level's plan; `closed_by` is the name of the parent's result line.
    fn close(&mut self, level: Level, closed_by: Option<&str>) {
        if !level.is_real() {
            return;
        }
        let depth = self.levels.len();
        if let (1, None, Some(name)) = (depth, &level.name, closed_by) {
            for r in &mut self.out.results[level.first_result..] {
                r.suite = name.to_string();
            }
        }
        let what = level
            .name
            .as_deref()
            .or(closed_by)
            .map_or_else(|| format!("unnamed subtest at depth {depth}"), |n| format!("subtest {n}"));
        if closed_by.is_none() {
            self.problem(format!("missing result: {what} has no result line"), 0);
        }
        if let Some(plan) = level.plan {
            self.check_plan(&what, plan, level.count);
        }
    }

    fn check_plan(&mut self, what: &str, plan: usize, count: usize) {
        if count < plan {
            self.problem(format!("missing result: {what} planned {plan} results, got {count}"), plan - count);
        } else if count > plan {
            self.problem(format!("{what} planned {plan} results, got {count}"), 0);
        }
    }

    fn problem(&mut self, message: String, weight: usize) {
        self.out.problems.push(Problem { message, weight });
    }

    /// Close all open levels, check the top-level plan and return the summary.
    pub fn finish(mut self) -> Summary {
        while self.levels.len() > 1 {
            let level = self.levels.pop().expect("level");
            self.close(level, None);
        }
        let root = self.levels.pop().expect("root level");
        self.out.top_plan = root.plan;
        match root.plan {
            Some(plan) => self.check_plan("top level", plan, root.count),
            None => self.problem("no top-level KTAP plan (output missing or cut short)".into(), 1),
        }
        self.out
    }
}

/// Drop ANSI escape sequences and control characters (terminal noise from firmware).
fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `N: 0x<hex>` (the text of a frame line after `#`).
fn parse_frame(text: &str) -> Option<u64> {
    let (index, addr) = text.split_once(':')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hex = addr.trim().strip_prefix("0x")?;
    let hex = hex.split_whitespace().next()?;
    u64::from_str_radix(hex, 16).ok()
}

/// The value of a `rip=0x…` word in a line, if present.
pub fn rip_of(text: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("rip=0x"))
        .and_then(|h| u64::from_str_radix(h.trim_end_matches(','), 16).ok())
}
