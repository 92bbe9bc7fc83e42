//! `strait apply`: validate manifests, then create or update their objects.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use strait_api::kinds::Object;
use strait_api::loader::{self, LoadErrors, LoadOptions, Loaded};

use crate::Global;
use crate::exit;

/// `kubectl`'s dry-run modes that make sense here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Apply for real.
    None,
    /// Load and validate locally; apply nothing and need no cluster.
    Client,
}

/// Arguments of `apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Files or directories of manifests; `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Namespace for objects that name none.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// `client` validates without a cluster; `--dry-run` alone means `client`.
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "client", default_value = "none")]
    pub dry_run: DryRun,
}

/// Loads and validates manifests, printing every error; `None` if any failed.
pub fn load_manifests(files: &[String], recursive: bool, namespace: &str) -> Result<Vec<Loaded>, ExitCode> {
    let opts = LoadOptions {
        default_namespace: namespace.to_string(),
        recursive,
    };
    let report = |errors: LoadErrors| {
        for e in &errors.0 {
            eprintln!("error: {e}");
        }
        let n = errors.0.len();
        eprintln!(
            "{n} problem{} found; nothing was applied. Fix the fields named above and run the command again.",
            if n == 1 { "" } else { "s" }
        );
        exit::code(exit::FAILURE)
    };
    let sources = loader::read_sources(files, recursive, &mut std::io::stdin().lock()).map_err(report)?;
    loader::load(&sources, &opts).map_err(report)
}

/// Runs `apply`.
pub fn apply(g: &Global, args: &ApplyArgs) -> ExitCode {
    let loaded = match load_manifests(&args.files, args.recursive, &args.namespace) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if args.dry_run == DryRun::Client {
        for l in &loaded {
            match &l.replaces {
                Some(earlier) => println!("{} valid (replaces the one at {earlier})", l.object.key()),
                None => println!("{} valid", l.object.key()),
            }
        }
        let files: std::collections::BTreeSet<_> = loaded.iter().map(|l| l.origin.file.as_str()).collect();
        eprintln!(
            "{} object{} in {} file{} valid; nothing was applied (dry run)",
            loaded.len(),
            if loaded.len() == 1 { "" } else { "s" },
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        );
        return ExitCode::SUCCESS;
    }
    let cluster = match super::open_local(g) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // An object that a later file replaces is applied once, in its last form (the state
    // `kubectl apply -f dir/` ends in). Namespaces and CRDs go first, as the registry orders kinds.
    let superseded: std::collections::HashSet<_> = loaded.iter().filter_map(|l| l.replaces.clone()).collect();
    let mut objects: Vec<Object> = loaded
        .into_iter()
        .filter(|l| !superseded.contains(&l.origin))
        .map(|l| l.object)
        .collect();
    objects.sort_by_key(|o| o.kind_id());
    let rt = super::runtime();
    match cluster.apply(&rt, objects) {
        Ok(done) => {
            for (key, outcome) in done {
                println!("{key} {outcome}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("Nothing was applied.");
            exit::code(exit::FAILURE)
        }
    }
}
