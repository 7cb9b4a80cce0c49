//! The command line: a subcommand per listing (`kthread`, the default, and
//! `wq`), its options, reading the file and reporting errors in one line.

use std::io::Read;

use crate::kthread::{self, Kthread};
use crate::listing::{self, LineError};
use crate::wq::{self, WqStat};

/// What a run prints, and its exit status (0 done, 1 unreadable or
/// malformed input, 2 bad command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Text for standard output.
    pub stdout: String,
    /// Text for standard error (one line per message).
    pub stderr: String,
    /// Exit status.
    pub code: i32,
}

/// The options given; each [`Command`] says which it accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `--file PATH` (`-` is standard input).
    pub file: Option<String>,
    /// `--sort KEY`.
    pub sort: Option<String>,
    /// `--state LETTERS`: keep rows in any of these states.
    pub state: Option<String>,
    /// `--tree`.
    pub tree: bool,
    /// `--json`.
    pub json: bool,
    /// `--strict`: a malformed line is an error instead of being skipped.
    pub strict: bool,
}

/// A listing as printed, with the lines a lenient parse skipped or doubted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The table or JSON.
    pub text: String,
    /// One per skipped or suspect line.
    pub warnings: Vec<LineError>,
}

/// A subcommand: one `sys:` listing, read, parsed and printed.
pub struct Command {
    /// Its name on the command line.
    pub name: &'static str,
    /// The file it reads on Redox when `--file` is not given.
    pub redox_file: &'static str,
    /// One line of help.
    pub about: &'static str,
    /// Its `--sort` keys, the default first.
    pub sorts: &'static [&'static str],
    /// Options it takes besides `--file`, `--sort`, `--json` and `--strict`.
    pub takes: &'static [&'static str],
    /// Parse the file's text and print it as asked (`sort` is one of
    /// `sorts`); a strict parse fails at the first malformed line.
    pub render: fn(text: &str, opts: &Options, sort: &str) -> Result<Rendered, LineError>,
}

/// Every subcommand; the first is the default.
pub const COMMANDS: &[Command] = &[
    Command {
        name: "kthread",
        redox_file: "/scheme/sys/kthread",
        about: "kernel threads (sys:kthread), like ps",
        sorts: &["pid", "cpu", "time"],
        takes: &["--state", "--tree"],
        render: render_kthreads,
    },
    Command {
        name: "wq",
        redox_file: "/scheme/sys/workqueue",
        about: "workqueue statistics (text of workqueue::monitor()), like wq_monitor.py",
        sorts: &["file", "name", "total", "time"],
        takes: &[],
        render: render_wqs,
    },
];

fn render_kthreads(text: &str, opts: &Options, sort: &str) -> Result<Rendered, LineError> {
    let parsed = listing::parse::<Kthread>(text, opts.strict)?;
    let mut rows = parsed.rows;
    if let Some(states) = &opts.state {
        rows.retain(|r| states.contains(r.state));
    }
    let by = match sort {
        "cpu" => kthread::Sort::Cpu,
        "time" => kthread::Sort::Time,
        _ => kthread::Sort::Pid,
    };
    kthread::sort(&mut rows, by);
    let text = if opts.json {
        kthread::to_json(&rows)
    } else if opts.tree {
        kthread::table(&kthread::tree(&rows))
    } else {
        kthread::table(&rows.iter().map(|r| (r, 0)).collect::<Vec<_>>())
    };
    Ok(Rendered { text, warnings: parsed.warnings })
}

fn render_wqs(text: &str, opts: &Options, sort: &str) -> Result<Rendered, LineError> {
    let parsed = listing::parse::<WqStat>(text, opts.strict)?;
    let mut rows = parsed.rows;
    let by = match sort {
        "name" => wq::Sort::Name,
        "total" => wq::Sort::Total,
        "time" => wq::Sort::Time,
        _ => wq::Sort::File,
    };
    wq::sort(&mut rows, by);
    let text = if opts.json { wq::to_json(&rows) } else { wq::table(&rows) };
    Ok(Rendered { text, warnings: parsed.warnings })
}

/// The help text.
pub fn usage() -> String {
    let mut s = String::from("kthread-ps: list Redox's kernel threads and workqueue statistics\n\nusage:\n");
    for (i, c) in COMMANDS.iter().enumerate() {
        let name = if i == 0 { format!("[{}]", c.name) } else { c.name.to_string() };
        let mut opts = format!(" [--file PATH] [--sort {}]", c.sorts.join("|"));
        for t in c.takes {
            let value = if *t == "--state" { " LETTERS" } else { "" };
            opts.push_str(&format!(" [{t}{value}]"));
        }
        s.push_str(&format!("  kthread-ps {name}{opts} [--json] [--strict]\n      {}\n", c.about));
    }
    s.push_str(
        "\n--file PATH      read PATH (`-`: standard input) instead of the sys: file (needed off Redox)\n\
         --sort KEY       order of the rows (the first key is the default; cpu and time sort most first)\n\
         --state LETTERS  only threads in one of these states (R S D P I Z)\n\
         --tree           children under their parent, indented (kthreadd's children)\n\
         --json           a JSON array of objects instead of the table\n\
         --strict         a malformed line is an error (default: skipped, with a warning)\n",
    );
    s
}

fn usage_error(msg: String) -> Outcome {
    Outcome { stdout: String::new(), stderr: format!("kthread-ps: {msg} (see --help)\n"), code: 2 }
}

/// Parse the arguments (without the program name): the command and its options.
pub fn parse_args(args: &[String]) -> Result<Option<(&'static Command, Options)>, String> {
    let mut it = args.iter().peekable();
    let cmd = match it.peek() {
        Some(a) if !a.starts_with('-') => {
            let c = COMMANDS.iter().find(|c| c.name == a.as_str()).ok_or_else(|| {
                let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
                format!("unknown command `{a}` (commands: {})", names.join(", "))
            })?;
            it.next();
            c
        }
        _ => &COMMANDS[0],
    };
    let mut o = Options::default();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if inline.is_some() && matches!(flag, "--tree" | "--json" | "--strict" | "--help") {
            return Err(format!("`{flag}` takes no value"));
        }
        let mut value = || inline.clone().or_else(|| it.next().cloned()).ok_or(format!("`{flag}` needs a value"));
        match flag {
            "-h" | "--help" => return Ok(None),
            "--file" | "-f" => o.file = Some(value()?),
            "--sort" | "-s" => o.sort = Some(value()?),
            "--state" => o.state = Some(value()?),
            "--tree" => o.tree = true,
            "--json" => o.json = true,
            "--strict" => o.strict = true,
            _ if flag.starts_with('-') => return Err(format!("unknown option `{flag}`")),
            _ => return Err(format!("unexpected argument `{arg}`")),
        }
    }
    for (given, name) in [(o.state.is_some(), "--state"), (o.tree, "--tree")] {
        if given && !cmd.takes.contains(&name) {
            return Err(format!("`{name}` is not an option of `{}`", cmd.name));
        }
    }
    if let Some(key) = &o.sort
        && !cmd.sorts.contains(&key.as_str())
    {
        return Err(format!("`--sort {key}`: `{}` sorts by {}", cmd.name, cmd.sorts.join(", ")));
    }
    if let Some(s) = &mut o.state {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("`--state {s}`: expected state letters such as D or RS"));
        }
        *s = s.to_ascii_uppercase();
    }
    if o.tree && o.json {
        return Err("`--tree` and `--json` do not combine (the JSON has each ppid)".into());
    }
    Ok(Some((cmd, o)))
}

/// Run the tool: parse `args` (without the program name), read the file,
/// print the listing.
pub fn run(args: &[String]) -> Outcome {
    let (cmd, opts) = match parse_args(args) {
        Ok(Some(x)) => x,
        Ok(None) => return Outcome { stdout: usage(), stderr: String::new(), code: 0 },
        Err(msg) => return usage_error(msg),
    };
    let path = match &opts.file {
        Some(p) => p.clone(),
        None if cfg!(target_os = "redox") => cmd.redox_file.to_string(),
        None => return usage_error(format!("{} exists only on Redox: give the file with --file PATH", cmd.redox_file)),
    };
    let shown = if path == "-" { "<stdin>" } else { path.as_str() };
    let fail = |msg: String| Outcome { stdout: String::new(), stderr: format!("kthread-ps: {msg}\n"), code: 1 };
    let bytes = if path == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).map(|_| b)
    } else {
        std::fs::read(&path)
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot read {shown}: {e}")),
    };
    let text = String::from_utf8_lossy(&bytes);
    let sort = opts.sort.as_deref().unwrap_or(cmd.sorts[0]);
    match (cmd.render)(&text, &opts, sort) {
        Ok(Rendered { text, warnings }) => Outcome {
            stdout: text,
            stderr: warnings.iter().map(|w| format!("kthread-ps: warning: {shown}:{}: {}\n", w.line, w.msg)).collect(),
            code: 0,
        },
        Err(e) => fail(format!("{shown}:{}: {}", e.line, e.msg)),
    }
}
