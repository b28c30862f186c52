package supervisor

import (
	"os"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func BenchmarkTmpParse(b *testing.B) {
	data, _ := os.ReadFile(configFile("good-full.toml"))
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			ParseConfig("x", data)
		}
	})
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			var v map[string]any
			toml.Decode(string(data), &v)
		}
	})
	b.Run("scan", func(b *testing.B) {
		for b.Loop() {
			scanKeyLines(string(data))
		}
	})
	b.Run("body", func(b *testing.B) {
		for b.Loop() {
			var v map[string]any
			if md, err := toml.Decode(string(data), &v); err == nil {
				kl := scanKeyLines(string(data))
				nlines := strings.Count(string(data), "\n") + 1
				seen := make(map[string]int)
				for _, k := range md.Keys() {
					n := kl.nth(k.String(), seen[k.String()])
					seen[k.String()]++
					_ = n < 1 || n > nlines
				}
			}
			c, err := ParseConfig("fuzz.toml", data)
			if err == nil {
				ListenersEqual(c, c)
			}
		}
	})
}
