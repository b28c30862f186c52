// Package control is the protocol between the baton command line and a
// running `baton run`: one unix stream socket, one request per connection.
//
// A client writes one JSON object and a newline; the server answers with one
// or more JSON lines and closes the connection. The last line is always a
// "status", "flags", "result" or "error" response; "event" lines come
// before it only while an upgrade or rollback is waited for. PROTOCOL.md is
// the reference.
//
// The invariant the server keeps: a request can only reach the supervisor
// once the peer's credentials have been checked and the whole request has
// been read and validated within MaxRequestBytes and the request timeout.
// Each connection has its own goroutine, so a slow or hostile client costs
// one goroutine and one fd for at most that long, and never delays the
// supervisor, an upgrade, or another client.
package control
