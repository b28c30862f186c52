package probe

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Bytes is an amount of memory. In TOML it is an integer (bytes) or a
// string with a unit: "50MiB", "1.5GiB", "512KiB", "100MB", "4096B".
type Bytes uint64

// Binary units, for Bytes values in Go.
const (
	KiB Bytes = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

// byteUnits are the units ParseBytes reads, longest suffix first so that
// "MiB" is not read as "B".
var byteUnits = []struct {
	suffix string
	size   float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// ErrBytes is wrapped by ParseBytes's errors.
var ErrBytes = errors.New("invalid size")

// ParseBytes reads a size: a number (bytes), or a number and one of the
// units B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (of 1000),
// with optional space between. The result is rounded down to a byte.
func ParseBytes(s string) (Bytes, error) {
	num, mult := strings.TrimSpace(s), 1.0
	for _, u := range byteUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.size
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%w %q: want a number of bytes or one with a unit (50MiB, 1.5GiB)", ErrBytes, s)
	}
	b := v * mult
	if b >= math.MaxUint64 {
		return 0, fmt.Errorf("%w %q: too large", ErrBytes, s)
	}
	return Bytes(b), nil
}

// UnmarshalText reads a size as ParseBytes does.
func (b *Bytes) UnmarshalText(text []byte) error {
	v, err := ParseBytes(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalTOML reads an integer as bytes and a string as ParseBytes does
// (BurntSushi/toml's Unmarshaler).
func (b *Bytes) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return fmt.Errorf("%w %d: negative", ErrBytes, v)
		}
		*b = Bytes(v)
		return nil
	case string:
		return b.UnmarshalText([]byte(v))
	}
	return fmt.Errorf("%w: %T %v is neither an integer nor a string", ErrBytes, v, v)
}

// String writes b in the largest binary unit that keeps it at least 1,
// with up to one decimal: "50MiB", "1.5GiB", "900B".
func (b Bytes) String() string {
	units := []struct {
		name string
		size Bytes
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}}
	for _, u := range units {
		if b >= u.size {
			return strconv.FormatFloat(math.Round(float64(b)/float64(u.size)*10)/10, 'f', -1, 64) + u.name
		}
	}
	return strconv.FormatUint(uint64(b), 10) + "B"
}
