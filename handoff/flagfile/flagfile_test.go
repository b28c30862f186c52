package flagfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flags.json")
	for _, want := range []File{
		{Format: 1, Version: 7, Flags: map[string]Flag{"new_checkout": {Percent: 100}, "search_v2": {Percent: 10}, "off": {Percent: 0}}},
		{Format: 1, Version: 8, Flags: map[string]Flag{}},
		{Format: 1, Version: MaxVersion, Flags: map[string]Flag{"a.b-c_D9": {Percent: 50}}},
	} {
		if err := Write(path, want); err != nil {
			t.Fatal(err)
		}
		got, err := Read(path)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Read after Write = %+v, want %+v", got, want)
		}
	}
}

// TestParseExample reads the example of the package documentation, as a
// writer in another language might lay it out.
func TestParseExample(t *testing.T) {
	f, err := Parse([]byte(`{"format": 1, "version": 7,
		"flags": {"new_checkout": {"percent": 100}, "search_v2": {"percent": 10}}}` + "\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := File{Format: 1, Version: 7, Flags: map[string]Flag{"new_checkout": {Percent: 100}, "search_v2": {Percent: 10}}}
	if !reflect.DeepEqual(f, want) {
		t.Fatalf("Parse = %+v, want %+v", f, want)
	}
	for _, c := range []struct {
		flag, key string
		on, known bool
	}{
		{"new_checkout", "anyone", true, true},
		{"search_v2", "bob", false, true},   // bucket 53
		{"search_v2", "user-7", true, true}, // bucket 1
		{"undeclared", "bob", false, false},
	} {
		on, known := f.Enabled(c.flag, c.key)
		if on != c.on || known != c.known {
			t.Errorf("Enabled(%q, %q) = %v, %v; want %v, %v", c.flag, c.key, on, known, c.on, c.known)
		}
	}
}

// TestBadFiles: each way a file can be wrong gives an error of the right
// kind that names what is wrong. (The text is checked for the name of the
// culprit only: what makes an error clear to the person reading it.)
func TestBadFiles(t *testing.T) {
	good := `{"format": 1, "version": 3, "flags": {"a": {"percent": 5}}}`
	for _, c := range []struct {
		name, data string
		kind       error
		mentions   string
	}{
		{"empty", "", ErrInvalid, "empty"},
		{"truncated", good[:len(good)/2], ErrInvalid, "unexpected EOF"},
		{"truncated at the last brace", good[:len(good)-1], ErrInvalid, "unexpected EOF"},
		{"not an object", `[1, 2]`, ErrInvalid, "array"},
		{"null", `null`, ErrInvalid, `"format"`},
		{"two objects", good + good, ErrInvalid, "after the JSON object"},
		{"unknown format", `{"format": 2, "version": 3, "flags": {}}`, ErrUnsupportedFormat, "format 2"},
		{"format 0", `{"format": 0, "version": 3, "flags": {}}`, ErrUnsupportedFormat, "format 0"},
		{"missing format", `{"version": 3, "flags": {}}`, ErrInvalid, `"format"`},
		{"missing version", `{"format": 1, "flags": {}}`, ErrInvalid, `"version"`},
		{"version 0", `{"format": 1, "version": 0, "flags": {}}`, ErrInvalid, "version 0"},
		{"negative version", `{"format": 1, "version": -4, "flags": {}}`, ErrInvalid, "version -4"},
		{"version beyond 2^53-1", `{"format": 1, "version": 9007199254740992, "flags": {}}`, ErrInvalid, "version 9007199254740992"},
		{"version not an integer", `{"format": 1, "version": 1.5, "flags": {}}`, ErrInvalid, "version"},
		{"missing flags", `{"format": 1, "version": 3}`, ErrInvalid, `"flags"`},
		{"null flags", `{"format": 1, "version": 3, "flags": null}`, ErrInvalid, `"flags"`},
		{"unknown member", `{"format": 1, "version": 3, "flags": {}, "extra": true}`, ErrInvalid, `"extra"`},
		{"unknown flag member", `{"format": 1, "version": 3, "flags": {"a": {"percent": 5, "keys": []}}}`, ErrInvalid, `"keys"`},
		{"missing percent", `{"format": 1, "version": 3, "flags": {"a": {}}}`, ErrInvalid, `flag "a": "percent" is missing`},
		{"percent over 100", `{"format": 1, "version": 3, "flags": {"a": {"percent": 101}}}`, ErrInvalid, `flag "a": percent 101`},
		{"negative percent", `{"format": 1, "version": 3, "flags": {"a": {"percent": -1}}}`, ErrInvalid, `flag "a": percent -1`},
		{"percent a string", `{"format": 1, "version": 3, "flags": {"a": {"percent": "5"}}}`, ErrInvalid, "percent"},
		{"percent a fraction", `{"format": 1, "version": 3, "flags": {"a": {"percent": 2.5}}}`, ErrInvalid, "percent"},
		{"empty flag name", `{"format": 1, "version": 3, "flags": {"": {"percent": 5}}}`, ErrInvalid, `flag name ""`},
		{"flag name with a space", `{"format": 1, "version": 3, "flags": {"a b": {"percent": 5}}}`, ErrInvalid, `flag name "a b"`},
		{"flag name with a zero byte", `{"format": 1, "version": 3, "flags": {"a\u0000b": {"percent": 5}}}`, ErrInvalid, `flag name "a\x00b"`},
		{"flag name too long", `{"format": 1, "version": 3, "flags": {"` + strings.Repeat("x", MaxNameLen+1) + `": {"percent": 5}}}`, ErrInvalid, "64 bytes"},
		{"too large", `{"format": 1, "version": 3, "flags": {}}` + strings.Repeat(" ", MaxSize), ErrInvalid, "larger than"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "flags.json")
			if err := os.WriteFile(path, []byte(c.data), 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Read(path)
			if err == nil {
				t.Fatalf("Read = %+v, want an error", f)
			}
			if !errors.Is(err, c.kind) {
				t.Errorf("error %q does not wrap %q", err, c.kind)
			}
			if !strings.Contains(err.Error(), c.mentions) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s and %s", err, c.mentions, path)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := Read(filepath.Join(t.TempDir(), "flags.json"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v does not wrap fs.ErrNotExist", err)
		}
	})
}

func TestCheckName(t *testing.T) {
	for _, name := range []string{"a", "new_checkout", "search-v2", "team.flag", "X9", strings.Repeat("n", MaxNameLen)} {
		if err := CheckName(name); err != nil {
			t.Errorf("CheckName(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"", "a b", "a/b", "a:b", "é", "a\x00", strings.Repeat("n", MaxNameLen+1)} {
		if err := CheckName(name); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckName(%q) = %v, want ErrInvalid", name, err)
		}
	}
}
