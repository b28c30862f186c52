// Package flagfile is the feature-flag file that baton writes and the
// services it runs read: its format, the rule that turns a percentage into
// an answer for one key, and an atomic writer.
//
// baton passes the file's path to a service in BATON_FLAGS_FILE. The format
// is small on purpose, so that a service in any language can read it:
//
//	{"format": 1, "version": 7, "flags": {"new_checkout": {"percent": 100}, "search_v2": {"percent": 10}}}
//
// Format 1, exactly:
//
//   - One JSON object (UTF-8) with exactly the members "format", "version"
//     and "flags", each required; any other member makes the file invalid,
//     so that whatever a later format adds can never be silently misread.
//     A reader rejects a format it does not know.
//   - "format": the integer 1.
//   - "version": an integer from 1 to 2^53-1 (exact in every JSON reader).
//     The writer makes it larger at every write. A reader uses it to tell
//     that the flags changed and to say which flags it runs with; it never
//     discards a file for its version: the file at the path is the truth,
//     even when its version went backwards (a writer that lost its count,
//     a restored backup). Writes replace the file atomically (rename), so
//     a reader that reads the path always gets one whole file, the newest.
//   - "flags": an object, possibly empty, from flag name to an object with
//     exactly one member, "percent": an integer from 0 to 100. A name is
//     1 to 64 bytes of ASCII letters, digits, '_', '-' and '.'.
//   - At most MaxSize bytes.
//
// A flag is on for a key (a user id, a client address: whatever the service
// splits its traffic by) when
//
//	Bucket(flag, key) < percent
//
// where Bucket is FNV-1a 64 (offset basis 14695981039346656037, prime
// 1099511628211, arithmetic modulo 2^64) over the bytes of flag, one zero
// byte, then the bytes of key, taken modulo 100. So a flag at 0 is off and
// at 100 on for every key; the same key always gets the same answer at the
// same percentage; raising the percentage only adds keys; and different
// flags pick their keys independently.
package flagfile
