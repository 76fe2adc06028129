package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	xfont "golang.org/x/image/font"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// The chart is 8 × 4.5 inches; at chartDPI a PNG is 1200 × 675 pixels,
// wide enough for a README and still readable on a phone.
const (
	chartWidth  = 8 * vg.Inch
	chartHeight = 4.5 * vg.Inch
	chartDPI    = 150
)

// statusClass is how the chart colours a run.
type statusClass int

const (
	class2xx statusClass = iota
	class429
	class403
	class5xx
	classOther
)

var classes = [...]struct {
	legend string
	color  color.RGBA
}{
	class2xx:   {"2xx answered", color.RGBA{R: 0x2e, G: 0x9e, B: 0x5b, A: 0xff}},
	class429:   {"429 rate limited", color.RGBA{R: 0xe6, G: 0x6c, B: 0x1a, A: 0xff}},
	class403:   {"403 quota spent", color.RGBA{R: 0x8e, G: 0x44, B: 0xad, A: 0xff}},
	class5xx:   {"5xx upstream error", color.RGBA{R: 0xc0, G: 0x1c, B: 0x28, A: 0xff}},
	classOther: {"other / no answer", color.RGBA{R: 0x80, G: 0x80, B: 0x80, A: 0xff}},
}

var (
	accumulatedColor = color.RGBA{R: 0x1f, G: 0x5f, B: 0xbf, A: 0xff}
	limitColor       = color.RGBA{R: 0xc0, G: 0x1c, B: 0x28, A: 0xff}
)

func classOf(status int) statusClass {
	switch {
	case status >= 200 && status < 300:
		return class2xx
	case status == 429:
		return class429
	case status == 403:
		return class403
	case status >= 500 && status < 600:
		return class5xx
	default:
		return classOther
	}
}

// titleSize is the title's font size.
const titleSize = 13

// chartTitle says what the lab sent (which API, model, streamed or not)
// and the policy's limit, on a second line when one would not hold both.
func chartTitle(o options, limit int) string {
	t := fmt.Sprintf("tokenlab: %s (%s%s)", plural(o.n, o.api.noun), o.model, streamNote(o.stream))
	if limit <= 0 {
		return t
	}
	policy := fmt.Sprintf("%d tokens/min policy", limit)
	style := plot.New().Title.TextStyle
	style.Font.Size = vg.Points(titleSize)
	if oneLine := t + ", " + policy; style.Width(oneLine) <= chartWidth-vg.Inch/4 {
		return oneLine
	}
	return t + "\n" + policy
}

// writeChart draws the runs: a bar of tokens per run coloured by status,
// the status written over every refused or failed run, the running total
// of tokens, and the policy's limit (when known, limit > 0).
func writeChart(path, title string, results []result, limit int) error {
	p, err := labPlot(title, results, limit)
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if err := savePlot(p, path); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	return nil
}

func labPlot(title string, results []result, limit int) (*plot.Plot, error) {
	n := len(results)
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(titleSize)
	p.Title.Padding = vg.Points(6)
	p.X.Label.Text = "run"
	p.Y.Label.Text = "tokens"
	p.X.Min, p.X.Max = 0.4, float64(n)+0.6
	p.X.Tick.Marker = runTicks{}
	p.Y.Min = 0
	p.Add(&plotter.Grid{Horizontal: plotter.DefaultGridLineStyle})

	// Bar width is in page units; spread the bars over the plot's width.
	barWidth := vg.Length(float64(chartWidth-vg.Inch) / float64(n+1) * 0.7)
	seen := map[statusClass]bool{}
	accumulated := make(plotter.XYs, n)
	total, peak := 0, 0
	var marks plotter.XYLabels
	var markClasses []statusClass
	for i, r := range results {
		c := classOf(r.Status)
		bar, err := plotter.NewBarChart(plotter.Values{float64(r.Total)}, barWidth)
		if err != nil {
			return nil, err
		}
		bar.XMin = float64(r.Run)
		bar.Color = classes[c].color
		bar.LineStyle.Width = 0
		p.Add(bar)
		if !seen[c] {
			seen[c] = true
			p.Legend.Add(classes[c].legend, bar)
		}
		total += r.Total
		peak = max(peak, r.Total)
		accumulated[i] = plotter.XY{X: float64(r.Run), Y: float64(total)}
		// A refused run has no bar to speak of: its status stands in for
		// it. An answered one gets its token count over the bar.
		mark := statusText(r.Status)
		if c == class2xx {
			mark = strconv.Itoa(r.Total)
		}
		marks.XYs = append(marks.XYs, plotter.XY{X: float64(r.Run), Y: float64(r.Total)})
		marks.Labels = append(marks.Labels, mark)
		markClasses = append(markClasses, c)
	}
	// Head room above the highest of line, limit and bars for the legend.
	p.Y.Max = float64(max(total, limit, peak)) * 1.3

	line, points, err := plotter.NewLinePoints(accumulated)
	if err != nil {
		return nil, err
	}
	line.Color, line.Width = accumulatedColor, vg.Points(2)
	points.Color, points.Shape = accumulatedColor, draw.CircleGlyph{}
	p.Add(line, points)
	p.Legend.Add("accumulated tokens", line, points)

	if limit > 0 {
		l, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: float64(limit)}, {X: p.X.Max, Y: float64(limit)}})
		if err != nil {
			return nil, err
		}
		l.Color, l.Width, l.Dashes = limitColor, vg.Points(1.5), []vg.Length{vg.Points(6), vg.Points(4)}
		p.Add(l)
		p.Legend.Add("limit: "+strconv.Itoa(limit)+" tokens/min", l)
	}

	{
		labels, err := plotter.NewLabels(marks)
		if err != nil {
			return nil, err
		}
		for i := range labels.TextStyle {
			s := &labels.TextStyle[i]
			s.XAlign, s.YAlign = draw.XCenter, draw.YBottom
			if markClasses[i] == class2xx {
				s.Color = color.Gray{Y: 0x40}
				s.Font = font.From(plot.DefaultFont, vg.Points(9))
				continue
			}
			s.Color = classes[markClasses[i]].color
			s.Font = font.From(plot.DefaultFont, vg.Points(11))
			s.Font.Weight = xfont.WeightBold
		}
		labels.Offset = vg.Point{Y: vg.Points(3)}
		p.Add(labels)
	}

	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs, p.Legend.YOffs = vg.Points(8), -vg.Points(4)
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Legend.Padding = vg.Points(3)
	return p, nil
}

// runTicks labels every run while there is room, then every k-th.
type runTicks struct{}

func (runTicks) Ticks(lo, hi float64) []plot.Tick {
	first, last := int(lo+0.99), int(hi)
	step := max(1, (last-first+1+24)/25)
	var ticks []plot.Tick
	for r := first; r <= last; r++ {
		label := ""
		if (r-first)%step == 0 {
			label = strconv.Itoa(r)
		}
		ticks = append(ticks, plot.Tick{Value: float64(r), Label: label})
	}
	return ticks
}

// savePlot writes p as PNG (at chartDPI) or SVG, by path's extension.
func savePlot(p *plot.Plot, path string) error {
	var c vg.CanvasWriterTo
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".png":
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(chartWidth, chartHeight), vgimg.UseDPI(chartDPI))}
	case ".svg":
		c = vgsvg.New(chartWidth, chartHeight)
	default:
		return fmt.Errorf("%s: the chart is written as .png or .svg, not %q", path, ext)
	}
	p.Draw(draw.New(c))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}
