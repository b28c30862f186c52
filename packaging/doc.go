// Package packaging holds what makes baton an installable system service:
// the systemd unit template systemd/baton@.service (one instance per
// /etc/baton/NAME.toml, started with `systemctl enable --now baton@NAME`),
// a drop-in that runs it unprivileged, an example socket unit, the man page
// baton.1, a sample config, and nfpm.yaml, from which `make package` builds
// the .deb and .rpm.
//
// It has no Go code of its own. Its tests check these files with the tools
// that consume them (systemd-analyze, groff, dpkg-deb, rpm, dpkg) and drive
// a real baton with the unit's own command lines; each test skips, naming
// the Debian package to install, when its tool is missing.
package packaging
