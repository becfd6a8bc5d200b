//! Running a command as another user: the one way the tests, the install test and the system test switch
//! users, with `setpriv` (util-linux), which must run as root.

use std::ffi::OsStr;
use std::process::Command;

use anyhow::Context as _;

/// The supplementary groups of a command run as another user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Groups {
    /// The user's own, from the group database (`--init-groups`): as a login or a systemd unit sets them.
    Theirs,
    /// None (`--clear-groups`): only the uid and the primary gid count.
    None,
}

/// The `setpriv` argument list that runs what follows it as `user` (a name or a uid) with primary group `group`
/// (a name or a gid) and `groups`; it ends with `--`, so the program and its arguments come next.
pub fn setpriv_args(user: &str, group: &str, groups: Groups) -> Vec<String> {
    let groups = match groups {
        Groups::Theirs => "--init-groups",
        Groups::None => "--clear-groups",
    };
    ["setpriv", &format!("--reuid={user}"), &format!("--regid={group}"), groups, "--"].map(str::to_owned).to_vec()
}

/// A command that runs `program` on this machine as the account `user` (its uid and primary gid from the user
/// database, no supplementary groups) with `HOME=/`; arguments added to it go to `program`.
pub fn as_user(user: &str, program: impl AsRef<OsStr>) -> anyhow::Result<Command> {
    let account = nix::unistd::User::from_name(user)
        .with_context(|| format!("could not read the user database for {user:?}"))?
        .with_context(|| format!("there is no account {user:?}; the tests need the standard accounts"))?;
    let argv = setpriv_args(&account.uid.to_string(), &account.gid.to_string(), Groups::None);
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]).arg(program).env("HOME", "/");
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_list_ends_before_the_program() {
        assert_eq!(
            setpriv_args("att-tokend", "att-tokend", Groups::Theirs),
            ["setpriv", "--reuid=att-tokend", "--regid=att-tokend", "--init-groups", "--"]
        );
        assert_eq!(setpriv_args("65534", "65534", Groups::None)[3], "--clear-groups");
    }

    #[test]
    fn root_runs_as_uid_0_and_an_unknown_account_is_named() {
        let command = as_user("root", "id").unwrap();
        let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(command.get_program(), "setpriv");
        assert_eq!(args, ["--reuid=0", "--regid=0", "--clear-groups", "--", "id"]);
        let error = as_user("no-such-account-here", "id").unwrap_err();
        assert!(format!("{error:#}").contains("no account \"no-such-account-here\""), "{error:#}");
    }
}
