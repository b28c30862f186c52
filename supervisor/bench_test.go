//go:build linux

package supervisor_test

import "testing"

// BenchmarkUpgradesUnderLoad runs the end-to-end upgrade test in both
// routing modes side by side and reports the failed requests of each: the
// kernel-steered mode must stay at 0; the shared mode's residual loss is
// what this benchmark keeps visible (it is recorded, not asserted).
func BenchmarkUpgradesUnderLoad(b *testing.B) {
	for _, mode := range []string{"bpf", "shared"} {
		b.Run(mode, func(b *testing.B) {
			var sent, failed int64
			for i := 0; i < b.N; i++ {
				h := start(b, app{Version: "v1", Steering: mode})
				res := upgradesUnderLoad(b, h, app{Steering: mode}, 20)
				sent += res.Sent
				failed += res.Failed
				if res.Failed > 0 {
					b.Logf("%s: %d of %d failed: %v", mode, res.Failed, res.Sent, res.Errors)
				}
				h.stop()
			}
			b.ReportMetric(float64(sent)/float64(b.N), "requests/op")
			b.ReportMetric(float64(failed)/float64(b.N), "failed/op")
		})
	}
}
