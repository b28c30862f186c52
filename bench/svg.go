//go:build linux

package main

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"
)

// The latency picture: for each mode, a few upgrades from the middle of its
// run, every request a dot at (sent, latency) coloured by the generation
// that answered, failures as crosses above the plot, each upgrade a shaded
// band from its signal until the old process is gone, with a solid line at
// the signal and a dashed one where the new generation serves. Where only
// some upgrades lost requests, the view starts at the first that did. Hand-written
// SVG: one path per colour, a dot per distinct pixel, so that thousands of
// requests stay a file of a few tens of kilobytes. All panels share one
// time scale and one log latency scale.

const svgName = "bench-latency.svg"

const (
	svgWidth    = 960
	svgLeft     = 64 // room for the latency labels
	svgRight    = 16
	svgPlotW    = svgWidth - svgLeft - svgRight
	svgPlotH    = 170
	svgPanelH   = 250 // title, failure strip, plot, time labels
	svgTop      = 72  // the picture's title and key
	svgPad      = 200 * time.Millisecond
	svgMinMS    = 0.03 // latency scale, log: 0.03 ms ...
	svgMaxMS    = 2000 // ... 2 s; beyond that, at the top
	svgStripGap = 16   // the failure strip above a plot
)

// generation colours (Okabe-Ito, distinguishable with the common colour
// vision deficiencies); generation g gets palette[(g-1) % 6].
var palette = []string{"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"}

func genColour(gen string) string {
	g, err := strconv.Atoi(gen)
	if err != nil || g < 1 {
		return "#999999"
	}
	return palette[(g-1)%len(palette)]
}

// panelView is the part of a mode's run the picture shows.
type panelView struct {
	r     modeResult
	first int  // index of the first upgrade shown
	lossy bool // chosen as the first upgrade that lost requests
	count int
	t0    time.Time // left edge
}

func latencySVG(results []modeResult, upgrades int) ([]byte, error) {
	upgrades = max(1, upgrades)
	var views []panelView
	span := time.Duration(0)
	for _, r := range results {
		v := panelView{r: r, count: min(upgrades, len(r.windows))}
		if v.count > 0 {
			v.first, v.lossy = viewFirst(r, v.count)
			v.t0 = r.windows[v.first].signal.Add(-svgPad)
			end := r.windows[v.first+v.count-1].end().Add(svgPad)
			span = max(span, end.Sub(v.t0))
		}
		views = append(views, v)
	}
	if span <= 0 {
		span = time.Second
	}
	var b bytes.Buffer
	height := svgTop + len(views)*svgPanelH + 24
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", svgWidth, height, svgWidth, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/>`+"\n", svgWidth, height)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold">Request latency across upgrades (make bench)</text>`+"\n", svgLeft)
	fmt.Fprintf(&b, `<text x="%d" y="38">Each dot a request: when it was sent (x), how long until its answer was in (y, log scale), coloured by the generation that answered;</text>`+"\n", svgLeft)
	fmt.Fprintf(&b, `<text x="%d" y="52">× above a plot: a failed request. Dots near 100 ms are /slow?ms=100 requests. Shaded: an upgrade, from its signal (solid line)</text>`+"\n", svgLeft)
	fmt.Fprintf(&b, `<text x="%d" y="66">until the old process is gone (stop-then-start: until the new one answers); dashed line: the new generation serves.</text>`+"\n", svgLeft)
	for i, v := range views {
		writePanel(&b, v, span, svgTop+i*svgPanelH)
	}
	b.WriteString("</svg>\n")
	if err := wellFormed(b.Bytes()); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// viewFirst picks the first upgrade to show: from the middle of the run,
// unless some upgrades lost requests and others did not; then the first
// that lost some, since where the failures fall is what the picture is for.
func viewFirst(r modeResult, count int) (first int, lossy bool) {
	middle := (len(r.windows) - count) / 2
	sp := splitByUpgrade(r)
	if sp.upgrade.failed == 0 {
		return middle, false
	}
	at := -1
	clean := false
	for i, w := range r.windows {
		if failedIn(r.load.Samples, w) > 0 {
			if at < 0 {
				at = i
			}
		} else {
			clean = true
		}
	}
	if at < 0 || !clean {
		return middle, false
	}
	return min(at, len(r.windows)-count), true
}

// failedIn counts the failed requests whose lifetime overlaps w.
func failedIn(samples []sample, w window) int {
	n := 0
	for _, x := range samples {
		if x.failed && !x.start.After(w.end()) && !x.start.Add(x.latency).Before(w.signal) {
			n++
		}
	}
	return n
}

// yOf is the plot's y for a latency, clamped to the scale.
func yOf(d time.Duration) float64 {
	v := float64(d) / float64(time.Millisecond)
	v = min(max(v, svgMinMS), svgMaxMS)
	lo, hi := math.Log10(svgMinMS), math.Log10(svgMaxMS)
	return svgPlotH * (1 - (math.Log10(v)-lo)/(hi-lo))
}

func writePanel(b *bytes.Buffer, v panelView, span time.Duration, top int) {
	plotTop := top + 22 + svgStripGap
	xOf := func(t time.Time) float64 { return svgPlotW * float64(t.Sub(v.t0)) / float64(span) }
	title := v.r.title
	if v.count == 0 {
		fmt.Fprintf(b, `<text x="%d" y="%d" font-weight="bold">%s: no upgrade to show</text>`+"\n", svgLeft, top+16, esc(title))
		return
	}
	fmt.Fprintf(b, `<g transform="translate(%d,%d)">`+"\n", svgLeft, plotTop)
	// Upgrades: shade, then lines and numbers.
	for i := v.first; i < v.first+v.count; i++ {
		w := v.r.windows[i]
		x0, x1, xr := xOf(w.signal), xOf(w.end()), xOf(w.ready)
		fmt.Fprintf(b, `<rect x="%.1f" y="0" width="%.1f" height="%d" fill="#000" fill-opacity="0.08"/>`+"\n", x0, max(x1-x0, 1), svgPlotH)
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#333"/>`+"\n", x0, x0, -svgStripGap, svgPlotH)
		if !w.ready.IsZero() {
			fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="0" y2="%d" stroke="#333" stroke-dasharray="4 3"/>`+"\n", xr, xr, svgPlotH)
		}
		fmt.Fprintf(b, `<text x="%.1f" y="11" font-size="10" fill="#333">upgrade %d (gen %d → %d): %s ms</text>`+"\n", x0+3, i+1, w.from, w.to, ms(w.end().Sub(w.signal)))
	}
	// Latency grid and labels.
	for _, tick := range []float64{0.1, 1, 10, 100, 1000} {
		y := yOf(time.Duration(tick * float64(time.Millisecond)))
		fmt.Fprintf(b, `<line x1="0" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", svgPlotW, y, y)
		fmt.Fprintf(b, `<text x="-6" y="%.1f" text-anchor="end" dominant-baseline="middle">%s ms</text>`+"\n", y, strconv.FormatFloat(tick, 'f', -1, 64))
	}
	fmt.Fprintf(b, `<text x="-6" y="%d" text-anchor="end" dominant-baseline="middle" fill="#b00">failed</text>`+"\n", -svgStripGap/2)
	// Time labels, every 250 ms from the first signal shown.
	sig := v.r.windows[v.first].signal
	step := 250 * time.Millisecond
	for t := time.Duration(0); t <= span; t += step {
		x := xOf(sig.Add(t))
		if x < 0 || x > svgPlotW {
			continue
		}
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#333"/>`+"\n", x, x, svgPlotH, svgPlotH+4)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%d ms</text>`+"\n", x, svgPlotH+16, t.Milliseconds())
	}
	fmt.Fprintf(b, `<rect x="0" y="0" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", svgPlotW, svgPlotH)
	// Requests: one dot per pixel and colour, one path per colour.
	dots := map[string]map[[2]int]bool{}
	fails := map[int]bool{}
	gens := map[string]int{}
	var shown, failed int
	end := v.t0.Add(span)
	for _, x := range v.r.load.Samples {
		if x.start.Before(v.t0) || x.start.After(end) {
			continue
		}
		shown++
		px := int(math.Round(xOf(x.start)))
		if x.failed {
			failed++
			fails[px] = true
			continue
		}
		c := genColour(x.gen)
		if dots[c] == nil {
			dots[c] = map[[2]int]bool{}
		}
		dots[c][[2]int{px, int(math.Round(yOf(x.latency)))}] = true
		gens[x.gen]++
	}
	for _, c := range slices.Sorted(maps.Keys(dots)) {
		fmt.Fprintf(b, `<path stroke="%s" stroke-width="3" stroke-linecap="round" stroke-opacity="0.7" d="`, c)
		pts := slices.SortedFunc(maps.Keys(dots[c]), func(p, q [2]int) int { return cmp.Or(cmp.Compare(p[0], q[0]), cmp.Compare(p[1], q[1])) })
		for _, p := range pts {
			fmt.Fprintf(b, "M%d %dh0", p[0], p[1])
		}
		b.WriteString(`"/>` + "\n")
	}
	if len(fails) > 0 {
		b.WriteString(`<path stroke="#b00" stroke-width="1.2" d="`)
		for _, px := range slices.Sorted(maps.Keys(fails)) {
			y := -svgStripGap / 2
			fmt.Fprintf(b, "M%d %dl6 6m0 -6l-6 6", px-3, y-3)
		}
		b.WriteString(`"/>` + "\n")
	}
	b.WriteString("</g>\n")
	// Title and this panel's key.
	why := ""
	if v.lossy {
		why = " (from the first that lost requests)"
	}
	fmt.Fprintf(b, `<text x="%d" y="%d"><tspan font-weight="bold">%s</tspan>: upgrades %d-%d of %d%s; %d requests shown, %d failed</text>`+"\n",
		svgLeft, top+16, esc(title), v.first+1, v.first+v.count, len(v.r.windows), why, shown, failed)
	x := svgWidth - svgRight
	keys := slices.SortedFunc(maps.Keys(gens), func(p, q string) int {
		a, _ := strconv.Atoi(p)
		c, _ := strconv.Atoi(q)
		return cmp.Or(cmp.Compare(a, c), cmp.Compare(p, q))
	})
	slices.Reverse(keys)
	for _, g := range keys {
		label := "gen " + g
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", x, top+16, esc(label))
		x -= 7 * len(label)
		fmt.Fprintf(b, `<circle cx="%d" cy="%d" r="4" fill="%s"/>`+"\n", x, top+12, genColour(g))
		x -= 14
	}
}

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s)) // a bytes.Buffer does not fail
	return b.String()
}

// wellFormed checks that the picture parses as XML, so that a quick run
// catches a broken picture before a full one writes it.
func wellFormed(svg []byte) error {
	d := xml.NewDecoder(bytes.NewReader(svg))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("not well-formed: %w", err)
		}
	}
}
