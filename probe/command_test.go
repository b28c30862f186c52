package probe

import (
	"testing"
)

func TestTailBuffer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"fits", []string{"ab", "cd"}, "abcd"},
		{"exactly full", []string{"abcd", "ef"}, "abcdef"},
		{"overflows across writes", []string{"abcd", "efgh"}, "...cdefgh"},
		{"one write larger than the buffer", []string{"0123456789"}, "...456789"},
		{"large write after small", []string{"x", "abcdef"}, "...abcdef"},
		{"trimmed", []string{" why\n"}, "why"},
		{"nothing", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTailBuffer(6)
			for _, w := range tc.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := b.String(); got != tc.want {
				t.Errorf("String = %q; want %q", got, tc.want)
			}
		})
	}
	// A cut through a multi-byte character drops its half.
	b := newTailBuffer(5)
	_, _ = b.Write([]byte("ééé")) // 6 bytes
	if got := b.String(); got != "...éé" {
		t.Errorf("String = %q", got)
	}
}
