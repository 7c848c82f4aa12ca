//! `copytrace generate-assets DIR`: man pages and shell completions from
//! the clap definitions, so the package ships what the binary accepts.

use std::io;
use std::path::Path;

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;

/// Writes `DIR/man/copytrace*.1` and `DIR/completions/{copytrace.bash,_copytrace,copytrace.fish}`.
pub fn generate(dir: &Path) -> io::Result<()> {
    let man_dir = dir.join("man");
    let comp_dir = dir.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&comp_dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("copytrace {}", env!("CARGO_PKG_VERSION"));
    let mut pages = vec![cmd.clone()];
    pages.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    for page in pages {
        let man = clap_mangen::Man::new(page)
            .source(source.clone())
            .manual("copytrace manual");
        let mut roff = Vec::new();
        man.render(&mut roff)?;
        std::fs::write(man_dir.join(man.get_filename()), roff)?;
    }
    let mut cmd = Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "copytrace", &comp_dir)?;
    }
    Ok(())
}
