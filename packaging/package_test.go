//go:build linux

package packaging

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The version `make package` is given in TestPackage, as `git describe`
// would print it 4 commits after tag v1.2.3, and the package version
// packaging/pkgversion.sh makes of it.
const (
	testVersion    = "v1.2.3-4-gabc1234"
	testPkgVersion = "1.2.3+git4.gabc1234"
)

// A platform of `make dist`: its directory suffix, what Go and the
// packages call it, and the ELF machine its binary is for.
type platform struct {
	name, goarch, goarm, deb, rpm string
	machine                       elf.Machine
}

var platforms = []platform{
	{"amd64", "amd64", "", "amd64", "x86_64", elf.EM_X86_64},
	{"arm64", "arm64", "", "arm64", "aarch64", elf.EM_AARCH64},
	{"armv7", "arm", "7", "armhf", "armv7hl", elf.EM_ARM},
}

// packageFiles is what the package installs: path, mode and type as
// `dpkg-deb -c` shows them (directories end in /).
var packageFiles = map[string]string{
	"/usr/bin/baton":                                                           "-rwxr-xr-x",
	"/usr/lib/systemd/system/baton@.service":                                   "-rw-r--r--",
	"/usr/share/man/man1/baton.1.gz":                                           "-rw-r--r--",
	"/usr/share/doc/baton/README.md":                                           "-rw-r--r--",
	"/usr/share/doc/baton/examples/web.toml":                                   "-rw-r--r--",
	"/usr/share/doc/baton/examples/baton@.socket":                              "-rw-r--r--",
	"/usr/share/doc/baton/examples/baton@.service.d/unprivileged.conf.example": "-rw-r--r--",
	"/etc/baton/": "drwxr-xr-x",
}

// TestPackage builds every binary and package through `make package` (in a
// temp DIST) and checks them: static binaries for the right machine with
// the version stamped, SHA256SUMS, the .deb's control fields, contents and
// maintainer scripts, the extracted baton running, the .rpm's (with rpm
// installed), and, with BATON_TEST_DPKG=1, a real `dpkg -i` and purge.
func TestPackage(t *testing.T) {
	if os.Getenv("BATON_TEST_PACKAGE") != "1" {
		t.Skip("slow (compiles nfpm and baton for three platforms): run `make test-package`, or set BATON_TEST_PACKAGE=1")
	}
	mk := needTool(t, "make", "make")
	dpkgDeb := needTool(t, "dpkg-deb", "dpkg")
	dist := t.TempDir()

	cmd := exec.Command(mk, "package", "DIST="+dist, "VERSION="+testVersion)
	cmd.Dir = repoRoot
	// Variables given to an outer make (`make test-package X=y`) reach
	// this one through MAKEFLAGS: only the command line above counts.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=")
	})
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	}

	var want []string // every file SHA256SUMS must list
	for _, p := range platforms {
		bin := "baton_" + testVersion + "_linux_" + p.name + "/baton"
		want = append(want, bin, "baton_"+testPkgVersion+"_"+p.deb+".deb", "baton-"+testPkgVersion+"-1."+p.rpm+".rpm")
		t.Run("binary/"+p.name, func(t *testing.T) { checkBinary(t, filepath.Join(dist, bin), p) })
	}
	t.Run("SHA256SUMS", func(t *testing.T) { checkSums(t, dist, want) })

	for _, p := range platforms {
		deb := filepath.Join(dist, "baton_"+testPkgVersion+"_"+p.deb+".deb")
		t.Run("deb/"+p.deb, func(t *testing.T) { checkDeb(t, dpkgDeb, deb, p) })
	}
	host := hostPlatform(t)
	hostDeb := filepath.Join(dist, "baton_"+testPkgVersion+"_"+host.deb+".deb")
	t.Run("deb/extracted", func(t *testing.T) { checkExtracted(t, dpkgDeb, hostDeb) })
	t.Run("rpm", func(t *testing.T) {
		rpm := needTool(t, "rpm", "rpm")
		for _, p := range platforms {
			checkRPM(t, rpm, filepath.Join(dist, "baton-"+testPkgVersion+"-1."+p.rpm+".rpm"), p)
		}
	})
	t.Run("dpkg-install", func(t *testing.T) { checkInstall(t, hostDeb) })
}

func hostPlatform(t *testing.T) platform {
	for _, p := range platforms {
		if p.goarch == runtime.GOARCH {
			return p
		}
	}
	t.Skipf("no package for this machine (%s)", runtime.GOARCH)
	return platform{}
}

// checkBinary: a static ELF executable for p's machine, built as `make
// dist` promises (no cgo, -trimpath, GOARM, the version stamped).
func checkBinary(t *testing.T, path string, p platform) {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != p.machine || f.Type != elf.ET_EXEC {
		t.Errorf("%s: machine %v type %v, want %v ET_EXEC", path, f.Machine, f.Type, p.machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			t.Errorf("%s: has %v: not statically linked", path, prog.Type)
		}
	}
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	for k, v := range map[string]string{"GOOS": "linux", "GOARCH": p.goarch, "CGO_ENABLED": "0", "-trimpath": "true"} {
		if settings[k] != v {
			t.Errorf("%s: built with %s=%q, want %q", path, k, settings[k], v)
		}
	}
	if p.goarm != "" && settings["GOARM"] != p.goarm {
		t.Errorf("%s: GOARM=%q, want %q", path, settings["GOARM"], p.goarm)
	}
	// -trimpath leaves -ldflags out of the build info: look for the
	// stamped string itself (the host's binary runs in deb/extracted).
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(testVersion)) {
		t.Errorf("%s: the version %s is not stamped in it", path, testVersion)
	}
}

// checkSums: SHA256SUMS lists exactly the binaries and packages, with
// their hashes, in sha256sum's format.
func checkSums(t *testing.T, dist string, want []string) {
	f, err := os.Open(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var listed []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: not a sha256sum line: %q", sc.Text())
		}
		b, err := os.ReadFile(filepath.Join(dist, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			t.Errorf("SHA256SUMS: %s: %s, but the file's is %x", name, sum, got)
		}
		listed = append(listed, name)
	}
	slices.Sort(listed)
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("SHA256SUMS lists\n%s\nwant\n%s", strings.Join(listed, "\n"), strings.Join(want, "\n"))
	}
}

// checkDeb: control fields, maintainer scripts and the exact contents.
func checkDeb(t *testing.T, dpkgDeb, deb string, p platform) {
	fields := map[string]string{
		"Package":      "baton",
		"Version":      testPkgVersion,
		"Architecture": p.deb,
		"Depends":      "adduser", // the postinst's adduser
		"Section":      "admin",
		"Priority":     "optional",
		"Homepage":     "https://github.com/baton-sh/baton",
	}
	for k, want := range fields {
		out, err := exec.Command(dpkgDeb, "--field", deb, k).Output()
		if got := strings.TrimSpace(string(out)); err != nil || got != want {
			t.Errorf("%s: %s: %q (%v), want %q", filepath.Base(deb), k, got, err, want)
		}
	}
	info, err := exec.Command(dpkgDeb, "--info", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Maintainer: ", "Description: zero-downtime process supervisor"} {
		if !strings.Contains(string(info), s) {
			t.Errorf("%s: control lacks %q:\n%s", filepath.Base(deb), s, info)
		}
	}
	ctrl := t.TempDir()
	if out, err := exec.Command(dpkgDeb, "--control", deb, ctrl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --control: %v\n%s", err, out)
	}
	for script, src := range map[string]string{"postinst": "scripts/deb-postinst.sh", "prerm": "scripts/deb-prerm.sh", "postrm": "scripts/deb-postrm.sh"} {
		got, err1 := os.ReadFile(filepath.Join(ctrl, script))
		want, err2 := os.ReadFile(src)
		if err1 != nil || err2 != nil || string(got) != string(want) {
			t.Errorf("%s: %s is not %s (%v, %v)", filepath.Base(deb), script, src, err1, err2)
		}
	}
	if _, err := os.Stat(filepath.Join(ctrl, "conffiles")); err == nil {
		t.Errorf("%s: has conffiles; the package ships no config in /etc", filepath.Base(deb))
	}

	out, err := exec.Command(dpkgDeb, "--contents", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// drwxr-xr-x root/root 0 2024-01-01 00:00 ./usr/bin/
		f := strings.Fields(line)
		if len(f) != 6 {
			t.Fatalf("dpkg-deb --contents: unexpected line %q", line)
		}
		if f[1] != "root/root" {
			t.Errorf("%s: %s is owned by %s, want root/root", filepath.Base(deb), f[5], f[1])
		}
		path := strings.TrimPrefix(f[5], ".")
		if want, ok := packageFiles[path]; ok || !strings.HasSuffix(path, "/") {
			got[path] = f[0]
			if !ok || f[0] != want {
				t.Errorf("%s: %s %s, want %q", filepath.Base(deb), f[0], path, want)
			}
		}
	}
	for path := range packageFiles {
		if _, ok := got[path]; !ok {
			t.Errorf("%s: lacks %s", filepath.Base(deb), path)
		}
	}
}

// checkExtracted: the host's .deb unpacked: baton runs and says its
// version, the unit is packaging's, and the man page is stamped.
func checkExtracted(t *testing.T, dpkgDeb, deb string) {
	root := t.TempDir()
	if out, err := exec.Command(dpkgDeb, "--extract", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --extract: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(root, "usr/bin/baton"), "version").CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != "baton "+testVersion {
		t.Errorf("usr/bin/baton version: %q (%v), want %q", got, err, "baton "+testVersion)
	}
	unit, err1 := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/baton@.service"))
	src, err2 := os.ReadFile("systemd/baton@.service")
	if err1 != nil || err2 != nil || string(unit) != string(src) {
		t.Errorf("the packaged baton@.service is not packaging/systemd/baton@.service (%v, %v)", err1, err2)
	}
	f, err := os.Open(filepath.Join(root, "usr/share/man/man1/baton.1.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	page, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	th, _, _ := strings.Cut(string(page[strings.Index(string(page), "\n.TH ")+1:]), "\n")
	if strings.Contains(string(page), "@VERSION@") || strings.Contains(string(page), "@DATE@") ||
		!strings.Contains(th, `"baton `+testPkgVersion+`"`) {
		t.Errorf("man page not stamped: %s", th)
	}
}

// checkRPM: name, version, arch, scriptlets and the same files as the .deb.
func checkRPM(t *testing.T, rpm, path string, p platform) {
	out, err := exec.Command(rpm, "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}", path).CombinedOutput()
	if want := "baton " + testPkgVersion + " 1 " + p.rpm; err != nil || strings.TrimSpace(string(out)) != want {
		t.Errorf("%s: %q (%v), want %q", filepath.Base(path), out, err, want)
	}
	out, err = exec.Command(rpm, "-qp", "--scripts", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "useradd --system") || !strings.Contains(string(out), "preuninstall") {
		t.Errorf("%s: scriptlets (%v):\n%s", filepath.Base(path), err, out)
	}
	out, err = exec.Command(rpm, "-qlp", path).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm -qlp: %v\n%s", err, out)
	}
	got := strings.Fields(string(out))
	var want []string
	for f := range packageFiles {
		want = append(want, strings.TrimSuffix(f, "/"))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s holds\n%s\nwant\n%s", filepath.Base(path), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// checkInstall installs the .deb into this system with dpkg -i, only when
// BATON_TEST_DPKG=1 says that is wanted, and purges it afterwards (with
// the user baton, when the package created it). `dpkg --root` is no
// alternative: it runs the maintainer scripts chrooted into a tree that has
// no shell, adduser or user database.
func checkInstall(t *testing.T, deb string) {
	if os.Getenv("BATON_TEST_DPKG") != "1" {
		t.Skip("installs into this system: set BATON_TEST_DPKG=1 (root, a Debian system without baton installed)")
	}
	if os.Geteuid() != 0 {
		t.Skip("dpkg -i needs root")
	}
	dpkg := needTool(t, "dpkg", "dpkg")
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "baton").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Skipf("a baton package is installed (%s): not touching it", out)
	}
	_, err := user.Lookup("baton")
	userExisted := err == nil
	_, err = user.LookupGroup("baton")
	groupExisted := err == nil

	t.Cleanup(func() {
		if out, err := exec.Command(dpkg, "--purge", "baton").CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge baton: %v\n%s", err, out)
		}
		if !userExisted {
			if out, err := exec.Command("userdel", "baton").CombinedOutput(); err != nil {
				t.Errorf("userdel baton: %v\n%s", err, out)
			}
		}
		if _, err := user.LookupGroup("baton"); err == nil && !groupExisted {
			if out, err := exec.Command("groupdel", "baton").CombinedOutput(); err != nil {
				t.Errorf("groupdel baton: %v\n%s", err, out)
			}
		}
		for _, p := range []string{"/usr/bin/baton", "/usr/lib/systemd/system/baton@.service", "/etc/baton"} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s is still there after dpkg --purge", p)
			}
		}
	})
	cmd := exec.Command(dpkg, "-i", deb)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}

	out, err := exec.Command("/usr/bin/baton", "version").CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != "baton "+testVersion {
		t.Errorf("/usr/bin/baton version: %q (%v), want %q", got, err, "baton "+testVersion)
	}
	u, err := user.Lookup("baton")
	if err != nil {
		t.Fatalf("the postinst did not create the user baton: %v", err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil || g.Name != "baton" {
		t.Errorf("user baton's group: %v (%v), want baton", g, err)
	}
	// Installed for real: the unit's own /usr/bin/baton, and its
	// Documentation=man:baton(1) resolved through man.
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		man := "--man=no"
		if _, err := exec.LookPath("man"); err == nil {
			man = "--man=yes"
		}
		out, err := exec.Command(analyze, "verify", man, "/usr/lib/systemd/system/baton@.service").CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s (installed): %v\n%s", man, err, out)
		}
	}
	// Running the postinst again (dpkg-reconfigure, a reinstall) must
	// find the user and not fail.
	cmd = exec.Command(dpkg, "-i", deb)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("dpkg -i over the installed package: %v\n%s", err, out)
	}
}
