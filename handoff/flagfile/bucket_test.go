package flagfile

import (
	"fmt"
	"hash/fnv"
	"testing"
)

// referenceBuckets are the values the README gives, so that an
// implementation in another language can check itself against them.
var referenceBuckets = []struct {
	flag, key string
	bucket    int
}{
	{"search_v2", "alice", 78},
	{"search_v2", "bob", 53},
	{"new_checkout", "alice", 90},
	{"new_checkout", "", 78},
	{"shout", "127.0.0.1", 83},
	{"shout", "user-42", 74},
	{"a", "", 84},
	{"shout", "zoë", 71}, // keys are bytes: UTF-8 here
}

func TestBucketReference(t *testing.T) {
	for _, c := range referenceBuckets {
		if got := Bucket(c.flag, c.key); got != c.bucket {
			t.Errorf("Bucket(%q, %q) = %d, want %d", c.flag, c.key, got, c.bucket)
		}
	}
}

// TestBucketIsFNV1a checks Bucket against the standard library's FNV-1a 64,
// an independent implementation of the documented algorithm.
func TestBucketIsFNV1a(t *testing.T) {
	for i := range 10000 {
		flag, key := fmt.Sprintf("flag%d", i%7), fmt.Sprintf("key-%d", i)
		h := fnv.New64a()
		_, _ = h.Write([]byte(flag + "\x00" + key)) // a hash.Hash never fails
		if want := int(h.Sum64() % 100); Bucket(flag, key) != want {
			t.Fatalf("Bucket(%q, %q) = %d, FNV-1a 64 mod 100 = %d", flag, key, Bucket(flag, key), want)
		}
	}
}

// keySets are key shapes a service splits by: user ids, numbers, client
// addresses.
var keySets = map[string]func(i int) string{
	"user-N":  func(i int) string { return fmt.Sprintf("user-%d", i) },
	"N":       func(i int) string { return fmt.Sprint(i) },
	"IPv4":    func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) },
	"u000000": func(i int) string { return fmt.Sprintf("u%06d", i) },
}

// TestPercentages: of 100,000 distinct keys, the share a flag is on for is
// within 0.5 percentage points of its percentage; and two flags at 10% are
// both on for about 1% of the keys (they pick independently).
func TestPercentages(t *testing.T) {
	const n = 100000
	for name, key := range keySets {
		t.Run(name, func(t *testing.T) {
			counts := map[int]int{}
			both := 0
			for i := range n {
				k := key(i)
				b := Bucket("search_v2", k)
				for _, p := range []int{1, 10, 50, 90} {
					if On("search_v2", k, p) {
						counts[p]++
					}
				}
				if b < 10 && Bucket("new_checkout", k) < 10 {
					both++
				}
			}
			for _, p := range []int{1, 10, 50, 90} {
				share := float64(counts[p]) * 100 / n
				if share < float64(p)-0.5 || share > float64(p)+0.5 {
					t.Errorf("at %d%% the flag is on for %.2f%% of the keys", p, share)
				}
			}
			if share := float64(both) * 100 / n; share < 0.8 || share > 1.2 {
				t.Errorf("two flags at 10%% are both on for %.2f%% of the keys, want about 1%%", share)
			}
		})
	}
}

// TestDeterministicAndMonotonic: the same key gets the same answer every
// time; every key on at p is on at p+1; 0 is off and 100 on for all.
func TestDeterministicAndMonotonic(t *testing.T) {
	for i := range 20000 {
		key := fmt.Sprintf("user-%d", i)
		b := Bucket("search_v2", key)
		if b < 0 || b > 99 {
			t.Fatalf("Bucket(search_v2, %q) = %d, not in 0-99", key, b)
		}
		if again := Bucket("search_v2", key); again != b {
			t.Fatalf("Bucket(search_v2, %q) = %d, then %d", key, b, again)
		}
		if On("search_v2", key, 0) || !On("search_v2", key, 100) {
			t.Fatalf("%q: on at 0 or off at 100", key)
		}
		for p := 0; p < 100; p++ {
			if On("search_v2", key, p) && !On("search_v2", key, p+1) {
				t.Fatalf("%q: on at %d%% but off at %d%%", key, p, p+1)
			}
		}
	}
}

func BenchmarkBucket(b *testing.B) {
	for b.Loop() {
		Bucket("search_v2", "user-123456")
	}
}
