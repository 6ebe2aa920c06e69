package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"time"
)

type series struct {
	label string
	c     color.RGBA
	ms    []float64 // sorted
	dash  bool
}

// writePlot draws the CDFs of scenario 2 (controller) against the floor as a PNG.
func writePlot(path string, s *singleSamples, f *floorSamples, r *Results) error {
	blue, orange := color.RGBA{31, 119, 180, 255}, color.RGBA{255, 127, 14, 255}
	lightBlue, lightOrange := color.RGBA{140, 190, 230, 255}, color.RGBA{250, 195, 140, 255}
	lightGreen := color.RGBA{150, 215, 150, 255}
	all := []series{
		{label: "one-PATCH floor: /scale PATCH sent -> replicas seen (no controller)", c: lightBlue, ms: f.patchScaled.ms(), dash: true},
		{label: "zerowake: create sent -> replicas seen", c: blue, ms: s.sentScaled.ms()},
		{label: "three-request floor: create + scale PATCH + status PUT round trips", c: lightOrange, ms: f.total.ms(), dash: true},
		{label: "zerowake: create sent -> Scaled condition seen", c: orange, ms: s.sentStatus.ms()},
		{label: "one-PATCH floor: PATCH sent -> Deployment seen ready (kwok)", c: lightGreen, ms: f.patchReady.ms(), dash: true},
		{label: "zerowake: create sent -> Ready condition seen (pods ready, kwok)", c: color.RGBA{44, 160, 44, 255}, ms: s.sentReady.ms()},
		{label: "zerowake: Deployment ready -> Ready condition (ready_detect)", c: color.RGBA{214, 39, 40, 255}, ms: s.detect.ms()},
	}
	title := fmt.Sprintf("scale from zero: %d sequential wakes vs the API floor (%d rounds), CDF", r.Single.N, r.Floor.N)
	return drawCDFs(path, title, "local control plane + kwok", all, r)
}

// drawCDFs draws the series' CDFs on a log-scale time axis as a PNG, with a title and a
// subtitle naming the machine and where the figures come from.
func drawCDFs(path, title, where string, all []series, r *Results) error {
	const W, H = 1100, 870
	const left, right, top, bottom = 90, 30, 80, 250
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	draw.Draw(img, img.Bounds(), &image.Uniform{color.White}, image.Point{}, draw.Src)
	black := color.RGBA{0, 0, 0, 255}
	grid := color.RGBA{225, 225, 225, 255}

	// x: log10 of milliseconds, over whole decades that hold every sample.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, se := range all {
		for _, v := range se.ms {
			if v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 1000
	}
	xmin := math.Floor(math.Log10(lo))
	xmax := math.Ceil(math.Log10(hi))
	if xmax <= xmin {
		xmax = xmin + 1
	}
	pw, ph := W-left-right, H-top-bottom
	px := func(v float64) int {
		v = math.Max(v, math.Pow(10, xmin))
		return left + int((math.Log10(v)-xmin)/(xmax-xmin)*float64(pw))
	}
	py := func(q float64) int { return top + ph - int(q*float64(ph)) }

	// Grid and axes.
	for d := xmin; d <= xmax; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > xmax+1e-9 {
				continue
			}
			x := px(v)
			line(img, x, top, x, top+ph, grid, 1, false)
			label := fmt.Sprintf("%g", v)
			drawText(img, x-textWidth(label, 2)/2, top+ph+10, label, black, 2)
		}
	}
	for q := 0.0; q <= 1.0001; q += 0.1 {
		y := py(q)
		line(img, left, y, left+pw, y, grid, 1, false)
		label := fmt.Sprintf("%.0f%%", q*100)
		drawText(img, left-10-textWidth(label, 2), y-7, label, black, 2)
	}
	line(img, left, top, left, top+ph, black, 2, false)
	line(img, left, top+ph, left+pw, top+ph, black, 2, false)
	xl := "milliseconds (log scale)"
	drawText(img, left+pw/2-textWidth(xl, 2)/2, top+ph+40, xl, black, 2)
	drawText(img, left, 18, title, black, 2)
	e := r.Env
	sub := fmt.Sprintf("%d cores, %s, kubernetes %s, %s, commit %s, %s", e.Cores, e.Go, e.Kubernetes,
		time.Now().UTC().Format("2006-01-02"), short(e.GitCommit), where)
	drawText(img, left, 46, sub, color.RGBA{80, 80, 80, 255}, 1)

	// CDFs as step lines.
	for _, se := range all {
		n := len(se.ms)
		if n == 0 {
			continue
		}
		prevX, prevY := px(se.ms[0]), py(0)
		for i, v := range se.ms {
			x, y := px(v), py(float64(i+1)/float64(n))
			line(img, prevX, prevY, x, prevY, se.c, 2, se.dash)
			line(img, x, prevY, x, y, se.c, 2, se.dash)
			prevX, prevY = x, y
		}
	}

	// Legend, under the x axis label.
	for i, se := range all {
		y := top + ph + 75 + i*22
		line(img, left, y+6, left+40, y+6, se.c, 3, se.dash)
		drawText(img, left+52, y, se.label, black, 2)
	}

	f2, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f2, img); err != nil {
		f2.Close()
		return err
	}
	return f2.Close()
}

// line draws a horizontal, vertical or diagonal segment of the given thickness.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color, width int, dash bool) {
	dx, dy := x1-x0, y1-y0
	steps := max(abs(dx), abs(dy))
	for i := 0; i <= steps; i++ {
		if dash && (i/8)%2 == 1 {
			continue
		}
		x, y := x0, y0
		if steps > 0 {
			x, y = x0+dx*i/steps, y0+dy*i/steps
		}
		for w := 0; w < width; w++ {
			for v := 0; v < width; v++ {
				img.Set(x+w-width/2, y+v-width/2, c)
			}
		}
	}
}

func abs(a int) int {
	if a < 0 {
		return -a
	}
	return a
}
