#!/bin/sh
# pkgversion.sh VERSION: the package version for a `git describe` VERSION,
# as nfpm's semver parsing wants it, ordered the way dpkg and rpm compare:
#
#   v1.2.3                   1.2.3
#   v1.2.3-rc.1              1.2.3-rc.1          (deb/rpm 1.2.3~rc.1, before 1.2.3)
#   v1.2.3-4-gabc1234        1.2.3+git4.gabc1234 (after 1.2.3)
#   v1.2.3-4-gabc1234-dirty  1.2.3+git4.gabc1234.dirty
#   abc1234[-dirty], dev     0.0.0+abc1234[.dirty], 0.0.0+dev (no tag yet)
set -eu
v=${1#v}
meta=
case $v in *-dirty) v=${v%-dirty}; meta=dirty ;; esac
# Commits after a tag: git describe appends -N-gHASH.
commits=$(printf '%s\n' "$v" | sed -n 's/^.*-\([0-9][0-9]*\)-\(g[0-9a-f][0-9a-f]*\)$/git\1.\2/p')
if [ -n "$commits" ]; then
	v=$(printf '%s\n' "$v" | sed 's/-[0-9][0-9]*-g[0-9a-f][0-9a-f]*$//')
	meta=$commits${meta:+.$meta}
fi
if ! printf '%s\n' "$v" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$'; then
	# Not a release tag: a bare commit hash or "dev".
	meta=$v${meta:+.$meta}
	v=0.0.0
fi
echo "$v${meta:++$meta}"
