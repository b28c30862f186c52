package supervisor

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
	"sort"
)

func TestTmpCorpusTiming(t *testing.T) {
	dir := os.Getenv("CORPUS")
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	type r struct{ f string; d time.Duration; n int }
	var rs []r
	for _, f := range files {
		b, _ := os.ReadFile(f)
		s := string(b)
		// format: go test fuzz v1\n[]byte("...")
		i := len("go test fuzz v1\n[]byte(")
		q, err := strconv.Unquote(s[i : len(s)-2])
		if err != nil { t.Log(f, err); continue }
		start := time.Now()
		ParseConfig("x", []byte(q))
		rs = append(rs, r{f, time.Since(start), len(q)})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].d > rs[j].d })
	for _, x := range rs[:min(5, len(rs))] { t.Log(x.f, x.d, x.n) }
}
