package supervisor

// The toml package keeps the position of keys to itself (and, for keys in an
// array of tables, keeps only the last element's), so the lines in config
// errors come from scanKeyLines, which reads the text for its keys. It runs
// before the toml package sees the text, and bounds how deeply that nests.

import (
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// maxNesting is how deeply a file may nest: the parts of a key's full path
// (table, dotted key and enclosing inline tables) plus the arrays around it.
// The format needs 3 ([service] environment.NAME, listener = [{ name = ...
// }]). The toml package's time and memory grow with the square of the depth
// of a key: unbounded, a 100 KB [a.a.a...] header takes 6 s, and 16 KB of
// nested inline tables take 1 s and 2 GB of allocations. Bounded, a parse
// takes under a millisecond per kilobyte of any text.
const maxNesting = 8

// keyLines records the line of each key in a config file.
type keyLines struct {
	keys    []keyLine        // in file order
	byKey   map[string][]int // indexes into keys, by keyLine.key
	tooDeep int              // the line where the nesting first exceeds maxNesting; 0 if it does not
}

type keyLine struct {
	key  string // toml.Key.String() of the full key
	elem int    // which element of a top-level array of tables ([[listener]]) it is in; -1 outside one
	line int
}

// line is the line of a key in element elem (-1 outside arrays of tables).
// For a key the file does not have, it is the line of the first key under
// it, or else of the nearest enclosing table that is in the file (such as a
// table header); 0 if none is. It is for error messages: it may take time
// linear in the number of keys.
func (kl *keyLines) line(elem int, path ...string) int {
	for n := len(path); n > 0; n-- {
		k := toml.Key(path[:n]).String()
		for _, i := range kl.byKey[k] {
			if kl.keys[i].elem == elem {
				return kl.keys[i].line
			}
		}
		under := k + "."
		for _, e := range kl.keys {
			if e.elem == elem && strings.HasPrefix(e.key, under) {
				return e.line
			}
		}
	}
	return 0
}

// nth is the line of the nth (from 0) appearance of key, counted the way
// toml.MetaData.Keys lists keys; failing that, of its first; or 0.
func (kl *keyLines) nth(key string, n int) int {
	is := kl.byKey[key]
	switch {
	case n < len(is):
		return kl.keys[is[n]].line
	case len(is) > 0:
		return kl.keys[is[0]].line
	}
	return 0
}

// scanKeyLines finds the keys in text: it reads table headers, keys and the
// structure of values (strings, arrays, inline tables) and skips the rest.
// Its lines are right for valid TOML; invalid TOML gives wrong lines, not a
// panic. It takes time linear in len(text) for any text: no part of it is
// read more than a constant number of times, and it stops at nesting deeper
// than maxNesting.
func scanKeyLines(text string) *keyLines {
	sc := keyScanner{s: text, elem: -1, counts: make(map[string]int), tooDeep: -1}
	sc.i = len(text) - len(strings.TrimPrefix(text, "\ufeff"))
	sc.scan()

	var newlines []int
	for i := 0; i < len(text); i++ {
		if text[i] == '\n' {
			newlines = append(newlines, i)
		}
	}
	lineOf := func(offset int) int { return sort.SearchInts(newlines, offset) + 1 }
	kl := &keyLines{keys: sc.out, byKey: make(map[string][]int, len(sc.out))}
	for i := range kl.keys {
		kl.keys[i].line = lineOf(kl.keys[i].line)
		kl.byKey[kl.keys[i].key] = append(kl.byKey[kl.keys[i].key], i)
	}
	if sc.tooDeep >= 0 {
		kl.tooDeep = lineOf(sc.tooDeep)
	}
	return kl
}

type keyScanner struct {
	s       string
	i       int
	table   []string       // the current [table]
	elem    int            // keyLine.elem of keys in the current table
	counts  map[string]int // top-level key → elements of its array of tables so far
	out     []keyLine      // with byte offsets for lines, until scanKeyLines converts them
	tooDeep int            // offset where the nesting exceeds maxNesting; -1 if it does not
}

// add records the key path at offset, unless it is nested too deeply
// (together with the arrays around it), which ends the scan.
func (sc *keyScanner) add(path []string, arrays, elem, offset int) bool {
	if len(path)+arrays > maxNesting {
		sc.stop(offset)
		return false
	}
	sc.out = append(sc.out, keyLine{key: toml.Key(path).String(), elem: elem, line: offset})
	return true
}

// stop ends the scan at a nesting deeper than maxNesting.
func (sc *keyScanner) stop(offset int) {
	sc.tooDeep = offset
	sc.i = len(sc.s)
}

func (sc *keyScanner) peek() byte {
	if sc.i < len(sc.s) {
		return sc.s[sc.i]
	}
	return 0
}

func (sc *keyScanner) skip(n int) { sc.i = min(sc.i+n, len(sc.s)) }

func (sc *keyScanner) scan() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\r', '\n':
			sc.i++
		case '#':
			sc.skipLine()
		case '[':
			sc.header()
		default:
			start := sc.i
			k := sc.key()
			sc.skipSpace()
			if k == nil || sc.peek() != '=' {
				sc.skipLine()
				continue
			}
			sc.i++
			path := join(sc.table, k)
			if !sc.add(path, 0, sc.elem, start) {
				return
			}
			sc.value(path, 0, sc.elem)
			sc.skipLine() // a comment, or the rest of a date-time
		}
	}
}

func (sc *keyScanner) header() {
	start := sc.i
	array := strings.HasPrefix(sc.s[sc.i:], "[[")
	if array {
		sc.skip(2)
	} else {
		sc.skip(1)
	}
	k := sc.key()
	sc.skipLine()
	if k == nil {
		return
	}
	sc.table = k
	if array && len(k) == 1 {
		sc.counts[k[0]]++
	}
	sc.elem = sc.counts[k[0]] - 1 // -1 unless under a top-level array of tables
	sc.add(k, 0, sc.elem, start)
}

// key reads a dotted key, or returns nil if there is none.
func (sc *keyScanner) key() []string {
	var parts []string
	for {
		sc.skipSpace()
		var part string
		switch c := sc.peek(); {
		case c == '"':
			part = sc.basicKey()
		case c == '\'':
			end := strings.IndexAny(sc.s[sc.i+1:], "'\n")
			if end < 0 || sc.s[sc.i+1+end] == '\n' {
				return nil
			}
			part = sc.s[sc.i+1 : sc.i+1+end]
			sc.skip(end + 2)
		default:
			start := sc.i
			for sc.i < len(sc.s) && isBareKeyByte(sc.s[sc.i]) {
				sc.i++
			}
			if sc.i == start {
				return nil
			}
			part = sc.s[start:sc.i]
		}
		parts = append(parts, part)
		sc.skipSpace()
		if sc.peek() != '.' {
			return parts
		}
		sc.i++
	}
}

func isBareKeyByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

var (
	simpleEscapes = map[byte]rune{'b': '\b', 't': '\t', 'n': '\n', 'f': '\f', 'r': '\r', 'e': 0x1b, '"': '"', '\\': '\\'}
	hexEscapes    = map[byte]int{'x': 2, 'u': 4, 'U': 8} // escape → number of hex digits
)

// basicKey reads a "quoted" key, undoing its escapes.
func (sc *keyScanner) basicKey() string {
	var b strings.Builder
	sc.i++ // the opening quote
	for sc.i < len(sc.s) {
		c := sc.s[sc.i]
		switch {
		case c == '"':
			sc.i++
			return b.String()
		case c == '\n':
			return b.String()
		case c != '\\' || sc.i+1 >= len(sc.s):
			b.WriteByte(c)
			sc.i++
			continue
		}
		e := sc.s[sc.i+1]
		sc.skip(2)
		if r, ok := simpleEscapes[e]; ok {
			b.WriteRune(r)
			continue
		}
		if n := hexEscapes[e]; n > 0 && sc.i+n <= len(sc.s) {
			if r, err := strconv.ParseUint(sc.s[sc.i:sc.i+n], 16, 32); err == nil {
				b.WriteRune(rune(r))
			}
			sc.skip(n)
		}
	}
	return b.String()
}

// value skips the value of key path, inside the given number of arrays,
// recording the keys of its inline tables.
func (sc *keyScanner) value(path []string, arrays, elem int) {
	sc.skipSpace()
	switch sc.peek() {
	case '"':
		sc.str('"')
	case '\'':
		sc.str('\'')
	case '[':
		sc.array(path, arrays+1, elem)
	case '{':
		sc.inlineTable(path, arrays, elem)
	default: // number, boolean or date-time
		start := sc.i
		for sc.i < len(sc.s) {
			c := sc.s[sc.i]
			if c == ' ' && sc.i-start == len("2006-01-02") && sc.i+1 < len(sc.s) && sc.s[sc.i+1] >= '0' && sc.s[sc.i+1] <= '9' {
				sc.i++ // the space between date and time
				continue
			}
			if strings.IndexByte(" \t\r\n,]}#", c) >= 0 {
				return
			}
			sc.i++
		}
	}
}

// str skips a string quoted by q, single-line or multi-line; only "basic"
// strings have escapes.
func (sc *keyScanner) str(q byte) {
	escapes := q == '"'
	q3 := `"""`
	if q == '\'' {
		q3 = `'''`
	}
	if strings.HasPrefix(sc.s[sc.i:], q3) {
		sc.skip(3)
		for sc.i < len(sc.s) {
			switch {
			case escapes && sc.s[sc.i] == '\\':
				sc.skip(2)
			case strings.HasPrefix(sc.s[sc.i:], q3):
				sc.skip(3)
				// Up to two more quotes belong to the string.
				for n := 0; n < 2 && sc.peek() == q; n++ {
					sc.i++
				}
				return
			default:
				sc.i++
			}
		}
		return
	}
	sc.i++
	for sc.i < len(sc.s) {
		switch c := sc.s[sc.i]; {
		case escapes && c == '\\':
			sc.skip(2)
		case c == q:
			sc.i++
			return
		case c == '\n':
			return
		default:
			sc.i++
		}
	}
}

// array skips an array, the value of key path; arrays counts it.
func (sc *keyScanner) array(path []string, arrays, elem int) {
	if len(path)+arrays > maxNesting {
		sc.stop(sc.i)
		return
	}
	sc.i++ // [
	for sc.i < len(sc.s) {
		sc.skipSpaceLines()
		switch sc.peek() {
		case 0:
			return
		case ']':
			sc.i++
			return
		case ',':
			sc.i++
		case '{':
			e := elem
			if len(path) == 1 { // listener = [{...}, {...}] is an array of tables too
				e = sc.counts[path[0]]
				sc.counts[path[0]]++
			}
			sc.inlineTable(path, arrays, e)
		default:
			before := sc.i
			sc.value(path, arrays, elem)
			if sc.i == before {
				sc.i++
			}
		}
	}
}

// inlineTable skips an inline table, the value of key path, recording its keys.
func (sc *keyScanner) inlineTable(path []string, arrays, elem int) {
	sc.i++ // {
	for sc.i < len(sc.s) {
		sc.skipSpaceLines()
		switch sc.peek() {
		case 0:
			return
		case '}':
			sc.i++
			return
		case ',':
			sc.i++
		default:
			start := sc.i
			k := sc.key()
			sc.skipSpace()
			if k == nil || sc.peek() != '=' {
				sc.skip(1) // key may have read to the end
				continue
			}
			sc.i++
			full := join(path, k)
			if !sc.add(full, arrays, elem, start) {
				return
			}
			sc.value(full, arrays, elem)
		}
	}
}

func (sc *keyScanner) skipSpace() {
	for sc.i < len(sc.s) && (sc.s[sc.i] == ' ' || sc.s[sc.i] == '\t') {
		sc.i++
	}
}

// skipSpaceLines skips whitespace, newlines and comments.
func (sc *keyScanner) skipSpaceLines() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\r', '\n':
			sc.i++
		case '#':
			sc.skipLine()
		default:
			return
		}
	}
}

// skipLine moves to the end of the line.
func (sc *keyScanner) skipLine() {
	if n := strings.IndexByte(sc.s[sc.i:], '\n'); n >= 0 {
		sc.i += n
	} else {
		sc.i = len(sc.s)
	}
}

func join(a, b []string) []string {
	return append(slices.Clip(a), b...)
}
