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

    /// Whether the case (or the group `python/`, `idle/`) `id` passes the filter, as
    /// criterion will judge it: the filter is a regular expression searched in the ID
    /// (criterion's reading, with the same `regex` crate), or with `--exact` a whole ID. A
    /// filter that is not a valid expression passes every case here (criterion reports it).
    pub fn wants(&self, id: &str) -> bool {
        let Some(f) = self.filter.as_deref() else {
            return true;
        };
        if self.exact {
            return id == f;
        }
        regex::Regex::new(f).map_or(true, |re| re.is_match(id))
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
    // A filter with regular-expression syntax selects like any other (it used to pass every
    // case, so the python and idle groups ran under any such filter).
    let a = Args::parse(&["tput/(shmq-raw|crossbeam)/diff/8/"]);
    assert!(a.wants("tput/crossbeam/diff/8/ring16M") && !a.wants("python/") && !a.wants("idle/"));
    let a = Args::parse(&["--exact", "tput/uds/diff/8"]);
    assert!(a.wants("tput/uds/diff/8") && !a.wants("tput/uds/diff/8/x"));
}
