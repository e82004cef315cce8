//! Dropping root after the listeners are bound (`server.user`).
//!
//! A tracker started as root (to bind ports below 1024 without a capability) switches to an
//! unprivileged account once every socket is open, so a fault in a request handler cannot act
//! as root. The switch is process-wide: glibc applies `setuid(2)` to every thread, including
//! the workers already running.

use nix::unistd::{self, Gid, Uid, User};

/// What [`drop_privileges`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `server.user` is empty: the process keeps the account it started with.
    Unchanged { uid: u32 },
    /// The process was not root and already runs as the named account.
    AlreadyUser { uid: u32 },
    /// The process switched from root to the named account and its primary group.
    Switched { uid: u32, gid: u32 },
}

/// Why the account could not be switched. Each message names the account.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("server.user = \"{0}\": no such account")]
    NoSuchUser(String),
    #[error("server.user = \"{0}\": cannot look the account up: {1}")]
    Lookup(String, nix::Error),
    #[error(
        "server.user = \"{user}\": switching accounts needs the tracker started as root \
         (it runs as uid {uid}); start it as root or leave server.user empty"
    )]
    NotRoot { user: String, uid: u32 },
    #[error("server.user = \"{0}\": {1} failed: {2}")]
    Switch(String, &'static str, nix::Error),
}

/// Switches the whole process to `user` (by name) when it runs as root: supplementary groups
/// cleared, then the user's primary group, then the user id (in that order, since a process
/// that is no longer root cannot change its groups). `user` empty changes nothing.
///
/// # Errors
/// [`PrivilegeError`] when the account does not exist, when a non-root process is asked to
/// become another account, or when a system call fails (the process must then stop: it would
/// otherwise keep running as root against the operator's wish).
pub fn drop_privileges(user: &str) -> Result<Outcome, PrivilegeError> {
    let current = Uid::current();
    if user.is_empty() {
        return Ok(Outcome::Unchanged {
            uid: current.as_raw(),
        });
    }
    let account = User::from_name(user)
        .map_err(|e| PrivilegeError::Lookup(user.to_owned(), e))?
        .ok_or_else(|| PrivilegeError::NoSuchUser(user.to_owned()))?;
    if !current.is_root() {
        return if account.uid == current {
            Ok(Outcome::AlreadyUser {
                uid: current.as_raw(),
            })
        } else {
            Err(PrivilegeError::NotRoot {
                user: user.to_owned(),
                uid: current.as_raw(),
            })
        };
    }
    let fail = |call, e| PrivilegeError::Switch(user.to_owned(), call, e);
    unistd::setgroups(&[] as &[Gid]).map_err(|e| fail("setgroups", e))?;
    unistd::setgid(account.gid).map_err(|e| fail("setgid", e))?;
    unistd::setuid(account.uid).map_err(|e| fail("setuid", e))?;
    // setuid(2) from root sets the real, effective and saved ids: there is no way back.
    if unistd::setuid(Uid::from_raw(0)).is_ok() && account.uid.as_raw() != 0 {
        return Err(fail("setuid", nix::Error::EPERM));
    }
    Ok(Outcome::Switched {
        uid: account.uid.as_raw(),
        gid: account.gid.as_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_user_changes_nothing() {
        assert_eq!(
            drop_privileges("").unwrap(),
            Outcome::Unchanged {
                uid: Uid::current().as_raw()
            }
        );
    }

    #[test]
    fn an_unknown_account_is_named_in_the_error() {
        let err = drop_privileges("no-such-account-ppsp").unwrap_err();
        assert!(matches!(err, PrivilegeError::NoSuchUser(_)));
        assert!(err.to_string().contains("no-such-account-ppsp"));
    }
}
