package extproc

import (
	"context"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/tokengate/tokengate/limiter/behind"
	"github.com/tokengate/tokengate/limiter/memstore"
)

// rateOf is a reply's rate headers, name: value, in order.
func rateOf(out []*extprocv3.ProcessingResponse) string {
	var b strings.Builder
	for _, r := range out {
		for _, h := range r.GetResponseBody().GetResponse().GetHeaderMutation().GetSetHeaders() {
			if k := h.GetHeader().GetKey(); strings.Contains(k, "ratelimit") {
				b.WriteString(k + ": " + string(h.GetHeader().GetRawValue()) + "\n")
			}
		}
	}
	return b.String()
}

// Settled behind the response, a request's rate headers are derived from
// its reservation and its own charge: for one client at a time they say
// what the store says when it settles in line, and the store ends the
// same.
func TestSettleBehindHeadersAsInline(t *testing.T) {
	yaml := strings.Replace(budgetYAML, "max: 3, window: 1m", "max: 30, window: 1m", 1)
	inline, p := budgetEnv(t, yaml)
	bh, _ := budgetEnv(t, yaml)
	queued := behind.New(memstore.New(), behind.Options{})
	defer queued.Close()
	bh.srv.store = queued
	for i := range 6 {
		usage := chatUsage(40+i, 30*i)
		want := rateOf(inline.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", usage)...))
		got := rateOf(bh.run(t, fullRequest("k", "/v1/chat/completions", labBody, "200", usage)...))
		if want == "" || got != want {
			t.Errorf("request %d: behind\n%s\ninline\n%s", i+1, got, want)
		}
		queued.Flush()
		inline.clock.Advance(7 * time.Second)
		bh.clock.Advance(7 * time.Second)
	}
	want := inline.usedOf(t, p, "k")
	bh.store = nil // read the queued store instead
	b := p.BudgetFor(hashKey("k"), "")
	d, err := queued.StatusMany(context.Background(), p.CounterKey(hashKey("k"), ""), b, bh.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range b {
		if got := d.Limits[i].Used; got != want[l.Name] {
			t.Errorf("%s: %d behind, %d inline", l.Name, got, want[l.Name])
		}
	}
}
