//! The suite's reading of its command line, which criterion parses too
//! (`Criterion::configure_from_args`): the filter, `--exact`, `--bench` and `--sample-size`
//! are needed before criterion runs a case, to skip the setup (peer processes, rings) of the
//! cases the filter leaves out, and to know how many samples make a figure.

/// Criterion's options that take a value (criterion 0.8's `configure_from_args`): the word
/// after one of them is its value, not the filter.
const WITH_VALUE: [&str; 19] = [
    "-c",
    "--color",
    "-s",
    "--save-baseline",
    "-b",
    "--baseline",
    "--baseline-lenient",
    "--format",
    "--profile-time",
    "--load-baseline",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--plotting-backend",
    "--output-format",
];

/// What the suite reads from its arguments.
#[derive(Default, Debug, PartialEq)]
pub struct Args {
    /// Criterion's positional FILTER: its first argument that is neither an option nor an
    /// option's value.
    pub filter: Option<String>,
    /// `--exact`: the filter is a whole ID, not a pattern.
    pub exact: bool,
    /// `--bench` (given by `cargo bench`): measure; without it the suite runs as a test.
    pub bench: bool,
    /// `--sample-size N`, if given.
    pub sample_size: Option<usize>,
    /// `--warm-up-time S`, if given (seconds).
    pub warm_up: Option<f64>,
    /// `--measurement-time S`, if given (seconds).
    pub measurement: Option<f64>,
}

impl Args {
    /// Read `args` (without the program name) the way criterion does.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Args {
        let mut a = Args::default();
        let mut it = args.iter().map(|s| s.as_ref());
        while let Some(w) = it.next() {
            if w == "--" {
                if a.filter.is_none() {
                    a.filter = it.next().map(str::to_string);
                }
                break;
            }
            let (name, inline) = match w.split_once('=') {
                Some((n, v)) if n.starts_with('-') => (n, Some(v.to_string())),
                _ => (w, None),
            };
            if WITH_VALUE.contains(&name) {
                let v = inline.or_else(|| it.next().map(str::to_string));
                match name {
                    "--sample-size" => a.sample_size = v.and_then(|v| v.parse().ok()),
                    "--warm-up-time" => a.warm_up = v.and_then(|v| v.parse().ok()),
                    "--measurement-time" => a.measurement = v.and_then(|v| v.parse().ok()),
                    _ => {}
                }
            } else if name == "--exact" {
                a.exact = true;
            } else if name == "--bench" {
                a.bench = true;
            } else if !w.starts_with('-') && a.filter.is_none() {
                a.filter = Some(w.to_string());
            }
        }
        a
    }

    /// Whether the case (or group prefix) `id` passes the filter, as criterion will judge it.
    ///
    /// Criterion reads the filter as a regular expression (or, with `--exact`, a whole ID).
    /// This understands the forms useful on these IDs: a plain substring, `^` and `$`
    /// anchors, and alternatives joined by `|` (`ring16M|rtt/`). A filter with any other
    /// regular-expression syntax passes every case here and leaves the choice to criterion
    /// (each case's setup then runs, and criterion skips its measurement).
    pub fn wants(&self, id: &str) -> bool {
        let Some(f) = self.filter.as_deref() else {
            return true;
        };
        if self.exact {
            return id == f;
        }
        if f.contains(['.', '*', '+', '?', '(', ')', '[', ']', '{', '}', '\\']) {
            return true;
        }
        f.split('|').any(|alt| {
            let (start, alt) = match alt.strip_prefix('^') {
                Some(rest) => (true, rest),
                None => (false, alt),
            };
            let (end, alt) = match alt.strip_suffix('$') {
                Some(rest) => (true, rest),
                None => (false, alt),
            };
            match (start, end) {
                (true, true) => id == alt,
                (true, false) => id.starts_with(alt),
                (false, true) => id.ends_with(alt),
                (false, false) => id.contains(alt),
            }
        })
    }
}

/// Check [`Args::parse`] and [`Args::wants`] on the command lines that used to go wrong
/// (the suite runs this at start, like `payloads::check_pod_types`).
pub fn check() {
    let a = Args::parse(&["--bench", "--warm-up-time", "1", "tput/shmq-raw/diff/8"]);
    assert_eq!(a.filter.as_deref(), Some("tput/shmq-raw/diff/8"));
    assert!(a.bench);
    let a = Args::parse(&["--sample-size=20", "--measurement-time", "2", "rtt/"]);
    assert_eq!(
        (a.filter.as_deref(), a.sample_size),
        (Some("rtt/"), Some(20))
    );
    assert_eq!((a.warm_up, a.measurement), (None, Some(2.0)));
    assert!(a.wants("rtt/shmq-raw/diff/8/ring256K/block") && !a.wants("idle/"));
    let a = Args::parse(&["ring16M|^idle/"]);
    assert!(a.wants("tput/uds/diff/8/ring16M") && a.wants("idle/") && !a.wants("tput/uds/diff/8"));
    let a = Args::parse(&["--exact", "tput/uds/diff/8"]);
    assert!(a.wants("tput/uds/diff/8") && !a.wants("tput/uds/diff/8/x"));
}
