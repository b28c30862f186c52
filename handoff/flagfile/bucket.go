package flagfile

// FNV-1a 64 parameters (FNV's published offset basis and prime).
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// Bucket is key's bucket for flag, from 0 to 99: FNV-1a 64 over the bytes of
// flag, a zero byte and the bytes of key, modulo 100. It depends on nothing
// else (no seed, no platform), so every language computes the same bucket;
// the package tests and the README hold reference values. In Python:
//
//	def bucket(flag: str, key: str) -> int:
//	    h = 14695981039346656037
//	    for b in flag.encode() + b"\0" + key.encode():
//	        h = ((h ^ b) * 1099511628211) % 2**64
//	    return h % 100
func Bucket(flag, key string) int {
	h := uint64(fnvOffset64)
	for i := 0; i < len(flag); i++ {
		h = (h ^ uint64(flag[i])) * fnvPrime64
	}
	h *= fnvPrime64 // the zero byte: h ^ 0 == h
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * fnvPrime64
	}
	return int(h % 100)
}

// On reports whether flag, at percent, is on for key: Bucket(flag, key) <
// percent. So it is off for every key at 0 (or below) and on for every key
// at 100 (or above), and a key on at p is on at every percentage above p.
func On(flag, key string, percent int) bool {
	return Bucket(flag, key) < percent
}
