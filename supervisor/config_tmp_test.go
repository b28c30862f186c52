package supervisor

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func tmpInputs() map[string]string {
	const size = 100 << 10
	head := "[service]\ncommand = [\"/a\"]\n"
	rep := func(unit string) string { return strings.Repeat(unit, size/len(unit)) }
	numbered := func(format string) string {
		var b strings.Builder
		for i := 0; b.Len() < size; i++ {
			fmt.Fprintf(&b, format, i, i)
		}
		return b.String()
	}
	return map[string]string{
		"unknown top keys":    numbered("k%d = %d\n"),
		"unknown svc keys":    head + numbered("k%d = %d\n"),
		"env vars":            "[service]\ncommand = [\"/a\"]\n[service.environment]\n" + numbered("V%d = \"%d\"\n"),
		"listeners":           head + numbered("[[listener]]\nname = \"l%d\"\naddress = \"127.0.0.1:%d\"\n"),
		"listeners dup port":  head + numbered("[[listener]]\nname = \"l%d\"\naddress = \"127.0.0.1:0\" # %d\n"),
		"unknown listener key": head + numbered("[[listener]]\nname = \"l%d\"\nx = %d\n"),
		"nested tables":       numbered("[a%d.b.c.d.e.f]\ng = %d\n"),
		"deep table header":   "[" + strings.Repeat("a.", size/2) + "b]\n",
		"deep inline":         "x = " + strings.Repeat("{a=", size/3) + "1" + strings.Repeat("}", size/3) + "\n",
		"deep arrays":         "x = " + strings.Repeat("[", size/2) + strings.Repeat("]", size/2) + "\n",
		"long string":         head + "[service.environment]\nX = \"" + rep("a") + "\"\n",
		"long escapes":        "x = \"" + rep("\\t") + "\"\n",
		"long key":            rep("a") + " = 1\n",
		"long quoted key":     "\"" + rep("\\u0041") + "\" = 1\n",
		"multiline str quotes": "x = \"\"\"" + rep("\"\"\\\"") + "\"\"\"\n",
		"many strings array":  head + "[readiness]\ncheck=\"exec\"\ncommand = [" + rep("\"a\", ") + "]\n",
		"array of inline":     "listener = [" + numbered("{name=\"l%d\", address=\"127.0.0.1:%d\"},") + "]\n" + head,
		"comments":            rep("# comment\n"),
		"blank":               rep("\n"),
		"dotted keys":         numbered("a.b%d.c = %d\n"),
		"unterminated":        "x = \"" + rep("a"),
		"brackets":            rep("["),
		"equals":              rep("a=1\n="),
	}
}

func TestTmpPathological(t *testing.T) {
	for name, in := range tmpInputs() {
		start := time.Now()
		_, err := ParseConfig("x", []byte(in))
		d := time.Since(start)
		msg := fmt.Sprint(err)
		if len(msg) > 100 { msg = msg[:100] }
		t.Logf("%-22s %8d bytes %12v %s", name, len(in), d, msg)
	}
}
