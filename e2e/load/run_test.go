package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// gateway imitates a strict limiter with a fake clock, and keeps its own
// account of what it charged when, for Run's records to be checked against.
type gateway struct {
	key   string
	limit int64

	// legacy, n and bestOf are the request shape the gateway expects;
	// any other is answered 400.
	legacy    bool
	n, bestOf int

	mu       sync.Mutex
	now      time.Time
	inflight int
	charged  []Record // as the gateway saw them
}

// gatewayRequest is either API's body, as the gateway reads it.
type gatewayRequest struct {
	Model     string        `json:"model"`
	Messages  []chatMessage `json:"messages"`
	Prompt    *string       `json:"prompt"`
	MaxTokens int           `json:"max_tokens"`
	N         *int          `json:"n"`
	BestOf    *int          `json:"best_of"`
}

// shape checks the request is what the run was asked to send, and says
// its prompt tokens and how many completions it makes the upstream
// generate.
func (g *gateway) shape(r *http.Request, body gatewayRequest) (prompt, choices int64, ok bool) {
	field := func(p *int, want int) bool { return want == 0 && p == nil || p != nil && *p == want }
	if r.Header.Get("api-key") != g.key || r.Header.Get("x-mock-completion-tokens") != strconv.Itoa(body.MaxTokens) ||
		body.Model != "gpt-4o" || !field(body.N, g.n) || !field(body.BestOf, g.bestOf) {
		return 0, 0, false
	}
	choices = int64(max(g.n, g.bestOf, 1))
	if g.legacy {
		if r.URL.Path != "/v1/completions" || body.Prompt == nil || body.Messages != nil {
			return 0, 0, false
		}
		return int64(len(strings.Fields(*body.Prompt))), choices, true
	}
	if r.URL.Path != "/v1/chat/completions" || len(body.Messages) != 1 || body.Prompt != nil {
		return 0, 0, false
	}
	return int64(len(strings.Fields(body.Messages[0].Content)) + 7), choices, true
}

func (g *gateway) advance(d time.Duration) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inflight > 0 {
		return fmt.Errorf("clock advanced with %d requests in flight", g.inflight)
	}
	g.now = g.now.Add(d)
	return nil
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.inflight++
	now := g.now
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inflight--
		g.mu.Unlock()
	}()
	var body gatewayRequest
	err := json.NewDecoder(r.Body).Decode(&body)
	prompt, choices, ok := g.shape(r, body)
	if err != nil || !ok {
		http.Error(w, fmt.Sprintf("bad request %s %+v (%v), headers %v", r.URL.Path, body, err, r.Header), http.StatusBadRequest)
		return
	}
	// Every choice (or best_of candidate) is billed, as the upstream does.
	completion := choices * int64(body.MaxTokens)
	total := prompt + completion
	g.mu.Lock()
	var inWindow int64
	for _, c := range g.charged {
		if c.At.Unix() > now.Unix()-60 {
			inWindow += c.Total
		}
	}
	ok = inWindow+total <= g.limit
	if ok {
		g.charged = append(g.charged, Record{At: now, Total: total})
	}
	g.mu.Unlock()
	if !ok {
		http.Error(w, `{"error":{"code":"rate_limit_exceeded"}}`, http.StatusTooManyRequests)
		return
	}
	fmt.Fprintf(w, `{"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`, prompt, completion, total)
}

func TestRunAttributesEveryAdmissionToItsSecond(t *testing.T) {
	g := &gateway{key: "k", limit: 20000, now: t0}
	a, b := httptest.NewServer(g), httptest.NewServer(g)
	defer a.Close()
	defer b.Close()
	const clients, rounds = 8, 150
	res, err := Run(context.Background(), Options{
		URLs: []string{a.URL, b.URL}, Clients: clients, Key: "k", Advance: g.advance,
		Start: t0, SimDuration: rounds * time.Second, MaxRequests: 10 * clients * rounds, MaxWall: time.Minute, Seed: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.String())
	if res.Ticks != rounds || res.Stopped != "" || !res.Now.Equal(t0.Add((rounds-1)*time.Second)) {
		t.Fatalf("ran %d/%d ticks to %v (stopped %q), want all %d ending at +%ds", res.Ticks, res.Rounds, res.Now, res.Stopped, rounds, rounds-1)
	}
	if res.Requests != clients*rounds || res.Admitted+res.RateLimited != res.Requests || res.Failed != 0 || res.Cancelled != 0 {
		t.Fatalf("outcomes %+v do not add up to %d requests", res, clients*rounds)
	}
	if res.Admitted != len(g.charged) || res.RateLimited == 0 {
		t.Fatalf("admitted %d, gateway charged %d; %d refused (want some)", res.Admitted, len(g.charged), res.RateLimited)
	}
	// Same charges per second on both sides.
	bySec := func(recs []Record) map[int64]int64 {
		m := map[int64]int64{}
		for _, r := range recs {
			m[r.At.Unix()] += r.Total
		}
		return m
	}
	mine, theirs := bySec(res.Records), bySec(g.charged)
	for s, n := range theirs {
		if mine[s] != n {
			t.Errorf("second %v: gateway charged %d, records say %d", time.Unix(s, 0).UTC(), n, mine[s])
		}
	}
	if want := WorstWindow(g.charged, WindowSpan); res.Worst != want || res.Worst.Tokens > g.limit {
		t.Errorf("worst window %+v, gateway's %+v (limit %d)", res.Worst, want, g.limit)
	}
	for _, r := range res.Records {
		if w := r.Total - r.Prompt - r.Completion; w != 0 || r.Prompt < 27 || r.Prompt > 607 || r.Completion < 50 || r.Completion > 800 {
			t.Fatalf("record %+v: sizes out of the default ranges", r)
		}
	}
}

// TestRunSendsChoices: with n, or legacy Completions with best_of, every
// request has the shape asked for, and the records hold the usage the
// upstream reported, which bills every choice or candidate.
func TestRunSendsChoices(t *testing.T) {
	tests := []struct {
		name      string
		legacy    bool
		n, bestOf int
		choices   int64
		prompt    Range // the prompt tokens a record may show
	}{
		{name: "chat n 4", n: 4, choices: 4, prompt: Range{27, 207}},
		{name: "legacy", legacy: true, choices: 1, prompt: Range{20, 200}},
		{name: "legacy n 2", legacy: true, n: 2, choices: 2, prompt: Range{20, 200}},
		{name: "legacy best_of 3", legacy: true, bestOf: 3, choices: 3, prompt: Range{20, 200}},
		{name: "legacy best_of 3 n 2", legacy: true, n: 2, bestOf: 3, choices: 3, prompt: Range{20, 200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &gateway{key: "k", limit: 20000, now: t0, legacy: tt.legacy, n: tt.n, bestOf: tt.bestOf}
			srv := httptest.NewServer(g)
			defer srv.Close()
			const clients, rounds = 8, 90
			res, err := Run(context.Background(), Options{
				URLs: []string{srv.URL}, Clients: clients, Key: "k", Advance: g.advance,
				Legacy: tt.legacy, N: tt.n, BestOf: tt.bestOf,
				PromptWords: Range{20, 200}, CompletionTokens: Range{50, 400},
				Start: t0, SimDuration: rounds * time.Second, MaxRequests: clients * rounds, MaxWall: time.Minute, Seed: 3,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res.String())
			if res.Failed != 0 || res.Admitted != len(g.charged) || res.RateLimited == 0 {
				t.Fatalf("failed %d (%+v), admitted %d of the gateway's %d, refused %d (want some)",
					res.Failed, res.Failures, res.Admitted, len(g.charged), res.RateLimited)
			}
			for _, r := range res.Records {
				each := r.Completion / tt.choices
				if r.Total != r.Prompt+r.Completion || r.Completion%tt.choices != 0 || each < 50 || each > 400 ||
					r.Prompt < int64(tt.prompt.Min) || r.Prompt > int64(tt.prompt.Max) {
					t.Fatalf("record %+v: want %d completions of 50–400 tokens each after a prompt of %d–%d", r, tt.choices, tt.prompt.Min, tt.prompt.Max)
				}
			}
			if want := WorstWindow(g.charged, WindowSpan); res.Worst != want || res.Worst.Tokens > g.limit {
				t.Errorf("worst window %+v, gateway's %+v (limit %d)", res.Worst, want, g.limit)
			}
		})
	}
}

func TestRunStopsAtItsBounds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream down", http.StatusBadGateway)
	}))
	defer srv.Close()
	advanced := 0
	res, err := Run(context.Background(), Options{
		URLs: []string{srv.URL}, Clients: 4, Advance: func(time.Duration) error { advanced++; return nil },
		Start: t0, SimDuration: time.Hour, MaxRequests: 10, MaxWall: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ticks != 2 || res.Requests != 8 || advanced != 1 || !strings.Contains(res.Stopped, "request bound") {
		t.Errorf("ticks %d, requests %d, advanced %d, stopped %q: want 2 rounds of 4, one advance, stopped by the request bound",
			res.Ticks, res.Requests, advanced, res.Stopped)
	}
	if res.Failed != 8 || len(res.Failures) != 8 || res.Failures[0].Status != http.StatusBadGateway {
		t.Errorf("failed %d, failures %+v: want 8 of status 502", res.Failed, res.Failures)
	}

	res, err = Run(context.Background(), Options{
		URLs: []string{srv.URL}, Clients: 4, Advance: func(time.Duration) error { return nil },
		Start: t0, SimDuration: time.Hour, MaxRequests: 100, MaxWall: time.Nanosecond,
	})
	if err != nil || res.Requests != 0 || !strings.Contains(res.Stopped, "wall-time bound") {
		t.Errorf("Run with no wall time: %v, %d requests, stopped %q: want none sent, stopped by the wall-time bound", err, res.Requests, res.Stopped)
	}

	stuck := errors.New("clock stuck")
	res, err = Run(context.Background(), Options{
		URLs: []string{srv.URL}, Clients: 1, Advance: func(time.Duration) error { return stuck },
		Start: t0, SimDuration: time.Hour, MaxRequests: 100, MaxWall: time.Minute,
	})
	if !errors.Is(err, stuck) || res.Ticks != 1 {
		t.Errorf("Run with a stuck clock: %v after %d ticks, want the clock's error after 1", err, res.Ticks)
	}
}

func TestRunRefusesUnboundedOptions(t *testing.T) {
	_, err := Run(context.Background(), Options{URLs: []string{"http://127.0.0.1:1"}, Clients: 4, Start: t0, SimDuration: time.Minute})
	for _, want := range []string{"no Advance", "max requests", "max wall time"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run without bounds or clock: %v, want it to say %q", err, want)
		}
	}
}

func TestRunRefusesBadChoices(t *testing.T) {
	for _, tt := range []struct {
		o    Options
		want string
	}{
		{Options{N: -1}, "must not be negative"},
		{Options{Legacy: true, BestOf: -2}, "must not be negative"},
		{Options{BestOf: 3}, "set Legacy"},
		{Options{Legacy: true, N: 4, BestOf: 3}, "best_of 3 must be at least n 4"},
	} {
		o := tt.o
		o.URLs, o.Clients, o.Start, o.SimDuration, o.MaxRequests, o.MaxWall = []string{"http://127.0.0.1:1"}, 1, t0, time.Minute, 10, time.Minute
		o.Advance = func(time.Duration) error { return nil }
		if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Run(n %d, best_of %d, legacy %v): %v, want it to say %q", tt.o.N, tt.o.BestOf, tt.o.Legacy, err, tt.want)
		}
	}
}
