//! Where the symlinks of an archive lead: each walked the way the kernel would, against the
//! final set of links (see the parent module's documentation).

use super::*;

/// The symlinks of an archive: path below the root (whose parents are real directories) →
/// target as stored. Checked as a whole by [`Links::check`], so the order of the entries does
/// not matter.
#[derive(Debug, Default)]
pub(super) struct Links {
    targets: BTreeMap<PathBuf, PathBuf>,
    /// Bytes counted against [`LINKS_MEMORY`].
    memory: usize,
}

/// A link refused by [`Links::check`].
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LinkRefusal {
    pub(super) link: PathBuf,
    pub(super) reason: String,
}

impl Links {
    /// Records the link at `path` (relative, already created on disk) to `target`.
    pub(super) fn add(&mut self, path: &Path, target: &str) -> Result<(), String> {
        self.memory += path.as_os_str().len() + target.len() + LINK_OVERHEAD;
        if self.memory > LINKS_MEMORY {
            return Err(too_many_links());
        }
        self.targets.insert(path.to_owned(), PathBuf::from(target));
        Ok(())
    }

    /// Resolves every link (see the module docs) and returns the first one refused.
    pub(super) fn check(&self) -> Result<(), LinkRefusal> {
        let mut walk = Walk {
            targets: &self.targets,
            resolved: HashMap::new(),
            memory: self.memory,
        };
        for link in self.targets.keys() {
            walk.resolve(link)?;
        }
        Ok(())
    }
}

fn too_many_links() -> String {
    format!(
        "the archive has more symlinks than can be checked in {} MiB (limit)",
        LINKS_MEMORY >> 20
    )
}

/// What is known of a link during [`Links::check`].
#[derive(Debug)]
enum Resolution {
    /// Its target is being walked; meeting it again is a loop.
    InProgress,
    /// It leads to `path` (below the root, through no link) by following `follows` links,
    /// itself included.
    Inside { path: PathBuf, follows: u32 },
}

struct Walk<'a> {
    targets: &'a BTreeMap<PathBuf, PathBuf>,
    resolved: HashMap<&'a Path, Resolution>,
    memory: usize,
}

impl<'a> Walk<'a> {
    /// Where `link` leads, and through how many links, worked out once.
    fn resolve(&mut self, link: &'a Path) -> Result<(PathBuf, u32), LinkRefusal> {
        match self.resolved.get(link) {
            Some(Resolution::Inside { path, follows }) => return Ok((path.clone(), *follows)),
            Some(Resolution::InProgress) => {
                return Err(refuse(link, "the symlink is part of a loop"));
            }
            None => {}
        }
        self.resolved.insert(link, Resolution::InProgress);
        let targets = self.targets;
        let from = link.parent().unwrap_or(Path::new("")).to_owned();
        let (path, follows) = self.walk(link, from, &targets[link])?;
        let follows = follows + 1;
        if follows > MAX_FOLLOWS {
            return Err(too_many_follows(link));
        }
        self.memory += path.as_os_str().len() + LINK_OVERHEAD;
        if self.memory > LINKS_MEMORY {
            return Err(refuse(link, &too_many_links()));
        }
        self.resolved.insert(
            link,
            Resolution::Inside {
                path: path.clone(),
                follows,
            },
        );
        Ok((path, follows))
    }

    /// Walks `target` from the directory `at`, for the link `link`.
    fn walk(
        &mut self,
        link: &'a Path,
        mut at: PathBuf,
        target: &Path,
    ) -> Result<(PathBuf, u32), LinkRefusal> {
        let mut follows = 0;
        for component in target.components() {
            match component {
                Component::CurDir => {}
                Component::ParentDir => {
                    if !at.pop() {
                        return Err(refuse(
                            link,
                            &format!(
                                "the symlink points to {target:?}, which leads outside the target"
                            ),
                        ));
                    }
                }
                Component::Normal(name) => {
                    at.push(name);
                    if at.as_os_str().len() > MAX_RESOLVED_LEN {
                        return Err(refuse(
                            link,
                            &format!(
                                "the symlink leads to a path longer than {MAX_RESOLVED_LEN} bytes"
                            ),
                        ));
                    }
                    if let Some((through, _)) = self.targets.get_key_value(at.as_path()) {
                        let (leads_to, more) = self.resolve(through)?;
                        follows += more;
                        if follows > MAX_FOLLOWS {
                            return Err(too_many_follows(link));
                        }
                        at = leads_to;
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse(
                        link,
                        &format!("the symlink points to {target:?}, outside the target"),
                    ));
                }
            }
        }
        Ok((at, follows))
    }
}

fn too_many_follows(link: &Path) -> LinkRefusal {
    refuse(
        link,
        &format!("the symlink leads through more than {MAX_FOLLOWS} symlinks"),
    )
}

fn refuse(link: &Path, reason: &str) -> LinkRefusal {
    LinkRefusal {
        link: link.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the links `(path, target)`, added in the given order and reversed; the answer
    /// must not depend on the order.
    pub(super) fn check(links: &[(&str, &str)]) -> Result<(), String> {
        let answers: Vec<_> = [links.to_vec(), links.iter().rev().copied().collect()]
            .into_iter()
            .map(|order| {
                let mut model = Links::default();
                for (path, target) in order {
                    model.add(Path::new(path), target)?;
                }
                model.check().map_err(|refusal| refusal.reason)
            })
            .collect();
        assert_eq!(answers[0], answers[1], "{links:?}");
        answers[0].clone()
    }

    fn refused(links: &[(&str, &str)], expect: &str) {
        let reason = check(links).expect_err("refused");
        assert!(reason.contains(expect), "{links:?}: {reason}");
    }

    #[test]
    fn single_links_are_resolved_against_their_directory() {
        assert_eq!(check(&[("a/link", "../b")]), Ok(()));
        assert_eq!(check(&[("link", "a/../b")]), Ok(()));
        assert_eq!(check(&[("link", ".")]), Ok(()));
        refused(&[("link", "..")], "outside the target");
        refused(&[("a/link", "../../x")], "outside the target");
        refused(&[("link", "a/../../x")], "outside the target");
        // Leaving and coming back is refused too: the walk may not leave the root at all.
        refused(&[("a/link", "../../a/x")], "outside the target");
        // A dangling link is judged as if the missing part existed.
        refused(&[("link", "missing/../..")], "outside the target");
    }

    #[test]
    fn links_through_links_are_followed() {
        // The review's chain: l1 is the root, so esc climbs seven levels above it.
        refused(
            &[
                ("a/b/c/d/e/f/l1", "../../../../../.."),
                ("esc", "a/b/c/d/e/f/l1/../../../../../../../etc/hostname"),
            ],
            "outside the target",
        );
        // A link through a link through a link, each inside, the last step out.
        let chain = [
            ("d1/d2/d3/up3", "../../.."),
            ("d1/d2/up2", "../../d1/d2/d3/up3"),
            ("d1/up1", "../d1/d2/up2"),
        ];
        assert_eq!(check(&chain), Ok(()));
        let mut out = chain.to_vec();
        out.push(("esc", "d1/up1/.."));
        refused(&out, "outside the target");
        // `..` after a link leaves where the link leads, not where its text is.
        assert_eq!(check(&[("l1", "a/b"), ("up", "l1/../../x")]), Ok(()));
        refused(&[("l1", "a"), ("up", "l1/../../x")], "outside the target");
        // A link to a file, used as a directory, is taken as one.
        refused(
            &[("f", "a/file"), ("esc", "f/../../..")],
            "outside the target",
        );
    }

    #[test]
    fn loops_and_long_chains_are_refused() {
        refused(&[("a", "b"), ("b", "a")], "loop");
        refused(&[("self", "self")], "loop");
        refused(&[("self", "self/..")], "loop");
        refused(&[("d/a", "../e/b"), ("e/b", "../d/a/x")], "loop");
        let chain = |len: usize| -> Vec<(String, String)> {
            (0..len)
                .map(|i| (format!("l{i}"), format!("l{}", i + 1)))
                .collect()
        };
        fn as_refs(links: &[(String, String)]) -> Vec<(&str, &str)> {
            links
                .iter()
                .map(|(p, t)| (p.as_str(), t.as_str()))
                .collect()
        }
        // l0 → l1 → … → l39 → l40 (not a link): 40 links followed, as many as Linux does.
        assert_eq!(check(&as_refs(&chain(40))), Ok(()));
        refused(&as_refs(&chain(41)), "more than 40 symlinks");
    }

    #[test]
    fn long_paths_and_many_links_are_bounded() {
        let deep = "a/".repeat(2100);
        refused(&[("link", &deep)], "longer than 4096 bytes");
        // Each link's resolution stays short, but their sum is bounded.
        let target = "t".repeat(4000);
        let mut model = Links::default();
        let added = (0..10_000)
            .map(|i| model.add(&PathBuf::from(format!("l{i}")), &target))
            .position(|result| result.is_err())
            .expect("refused before 10,000 links of 4 KB");
        assert!(added > 3000, "{added}");
    }
}
