//! The command line of the benches that run without criterion (`growth.rs`, `idle.rs`):
//! `cargo bench --all-features -- [--quick] [FILTER...]` reaches every bench, so these
//! take criterion's options too and ignore the ones they have no use for.

/// criterion options that take a value: skipped with it, so that the value is not taken for
/// a filter.
const VALUE_OPTIONS: [&str; 9] = [
    "--save-baseline",
    "--baseline",
    "--load-baseline",
    "--profile-time",
    "--measurement-time",
    "--warm-up-time",
    "--sample-size",
    "--output-format",
    "--color",
];

/// What the command line asks of a harness-less bench.
pub struct Args {
    /// `--quick`: a shorter pass.
    pub quick: bool,
    /// The positional arguments: run only what contains one of them (all when empty).
    pub filters: Vec<String>,
}

impl Args {
    /// Reads the process's arguments: `--quick`, filters, and options of cargo's and
    /// criterion's (such as `--bench`) skipped with their values.
    pub fn parse() -> Self {
        let mut quick = false;
        let mut filters = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--quick" {
                quick = true;
            } else if VALUE_OPTIONS.contains(&arg.as_str()) {
                args.next();
            } else if !arg.starts_with('-') {
                filters.push(arg);
            }
        }
        Args { quick, filters }
    }

    /// Whether `id` is wanted: no filters, or one of them is part of it.
    pub fn wants(&self, id: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| id.contains(f.as_str()))
    }
}
