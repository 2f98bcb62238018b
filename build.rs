//! Embeds the git commit the binary is built from (`rolegate --version`,
//! `rolegate_build_info`). Outside a git checkout (an image build without
//! `.git`, a crate tarball) it is "unknown".

use std::process::Command;

fn main() {
    // An image build has no .git and passes the commit in.
    let given = std::env::var("ROLEGATE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty() && c != "unknown");
    let commit = given.unwrap_or_else(|| git_commit().unwrap_or_else(|| "unknown".to_owned()));
    println!("cargo:rustc-env=ROLEGATE_GIT_COMMIT={commit}");
    // A new commit changes the ref HEAD points to. Asked of git, not
    // assumed to be `.git/…`: in a worktree `.git` is a file, and a path
    // that does not exist would make cargo rerun this on every build.
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(p) = git_output(&["rev-parse", "--git-path", path])
            .filter(|p| std::path::Path::new(p).exists())
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-env-changed=ROLEGATE_GIT_COMMIT");
}

fn git_commit() -> Option<String> {
    git_output(&["rev-parse", "--short=12", "HEAD"])
}

fn git_output(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}
