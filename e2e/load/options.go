package load

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Options describe one run.
type Options struct {
	// URLs are the gateways' base URLs; requests go round-robin across
	// them, so several replicas sharing one store can be driven as one.
	URLs []string
	// Clients is how many clients send concurrently: each sends one
	// request per tick, all at once, so every round is Clients-wide
	// concurrency against the same second.
	Clients int
	// Key is the subscription key, sent in api-key.
	Key string
	// Model is the model named in the body; gpt-4o when empty.
	Model string
	// Legacy sends legacy Completions (POST /v1/completions, the prompt a
	// string) instead of chat completions.
	Legacy bool
	// N, when positive, is sent as the request's n: the upstream
	// generates that many completions, each up to max_tokens, and bills
	// them all. Zero sends no n (one completion).
	N int
	// BestOf, when positive, is sent as best_of (legacy Completions
	// only; at least N): best_of candidates are generated and billed, N
	// returned. Zero sends none.
	BestOf int
	// Advance moves the gateways' fake clock forward (see ClockAdvancer).
	// It is only called between rounds, with no request in flight.
	Advance func(time.Duration) error
	// Start is where the fake clock stands when Run is called.
	Start time.Time
	// SimDuration is the fake time the run covers, in rounds of Tick.
	SimDuration time.Duration
	// Tick is the fake time between rounds; one second by default.
	Tick time.Duration
	// MaxRequests and MaxWall bound the run in count and in real time;
	// a run that reaches either stops early, between two rounds, and says
	// so in Result.Stopped. A round may end up to the client's timeout
	// after MaxWall.
	MaxRequests int
	MaxWall     time.Duration
	// Seed makes the request sizes reproducible.
	Seed uint64
	// PromptWords is the range of the prompt's length, in words of one
	// token each (chat framing adds 7 tokens, a legacy prompt is the words
	// alone); 20–600 by default.
	PromptWords Range
	// CompletionTokens is the range of completion lengths, asked of
	// openai-mock with x-mock-completion-tokens and sent as max_tokens too,
	// so that a strict reservation is tight but true; 50–800 by default.
	// It is the length of each choice: with N or BestOf the upstream
	// generates (and bills) that many completions of it.
	CompletionTokens Range
	// OnRecord, when set, is called for every admitted request as soon as
	// its answer is read, from the client's goroutine.
	OnRecord func(Record)
	// HTTP is the client used; one pooling a connection per client when nil.
	HTTP *http.Client
}

// Range is an inclusive range of integers.
type Range struct{ Min, Max int }

// Defaults of Options.
var (
	DefaultPromptWords      = Range{20, 600}
	DefaultCompletionTokens = Range{50, 800}
)

// requestTimeout bounds one request when Options.HTTP is nil; MaxWall
// bounds the run anyway, this only keeps one stuck call from using it all.
const requestTimeout = 30 * time.Second

// fill sets the defaults and refuses options a run cannot honour, since an
// unbounded or clockless load would prove nothing.
func (o *Options) fill() error {
	var errs []error
	if len(o.URLs) == 0 {
		errs = append(errs, errors.New("no URLs"))
	}
	if o.Clients <= 0 {
		errs = append(errs, fmt.Errorf("clients must be positive, got %d", o.Clients))
	}
	if o.Advance == nil {
		errs = append(errs, errors.New("no Advance: records need the fake clock"))
	}
	if o.Start.IsZero() {
		errs = append(errs, errors.New("no Start time"))
	}
	if o.Tick == 0 {
		o.Tick = time.Second
	}
	if o.Tick < 0 || o.SimDuration < o.Tick {
		errs = append(errs, fmt.Errorf("sim duration %v must hold at least one tick of %v", o.SimDuration, o.Tick))
	}
	if o.MaxRequests < o.Clients {
		errs = append(errs, fmt.Errorf("max requests %d must allow one round of %d clients", o.MaxRequests, o.Clients))
	}
	if o.MaxWall <= 0 {
		errs = append(errs, errors.New("max wall time must be positive"))
	}
	if o.N < 0 || o.BestOf < 0 {
		errs = append(errs, fmt.Errorf("n %d and best_of %d must not be negative", o.N, o.BestOf))
	}
	if o.BestOf > 0 && !o.Legacy {
		errs = append(errs, errors.New("best_of is a legacy Completions field: set Legacy"))
	}
	if o.BestOf > 0 && o.BestOf < o.N {
		errs = append(errs, fmt.Errorf("best_of %d must be at least n %d", o.BestOf, o.N))
	}
	if o.Model == "" {
		o.Model = "gpt-4o"
	}
	if o.PromptWords == (Range{}) {
		o.PromptWords = DefaultPromptWords
	}
	if o.CompletionTokens == (Range{}) {
		o.CompletionTokens = DefaultCompletionTokens
	}
	for _, r := range []Range{o.PromptWords, o.CompletionTokens} {
		if r.Min < 1 || r.Max < r.Min {
			errs = append(errs, fmt.Errorf("range %d–%d must be positive and ordered", r.Min, r.Max))
		}
	}
	if o.HTTP == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// One idle connection per client, or every round would open
		// fresh ones and fill the loopback with TIME_WAIT sockets.
		tr.MaxIdleConnsPerHost = o.Clients
		o.HTTP = &http.Client{Transport: tr, Timeout: requestTimeout}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	return nil
}
