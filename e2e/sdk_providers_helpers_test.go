package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokengate/tokengate/e2e/harness"
	adminv1 "github.com/tokengate/tokengate/proto/tokengate/admin/v1"
)

// The provider SDK suite (issue 15): the official Anthropic, Gen AI and
// Bedrock Runtime SDKs, pointed at the front, each (1) read tokengate's
// 429 as their own rate-limit error, and (2) with their retries on, get
// their answer on their own once the window has moved on, the usage they
// report being what tokengate charged. Every provider runs one scenario,
// sdkpRun, on its own stack.

// sdkpLimit is the tokens per minute of sdkpConfig's policy.
const sdkpLimit = 500

// sdkpConfig has one policy on every path that names no counter_key
// header: each API's own key source applies (Anthropic's x-api-key or a
// Bearer token, Gemini's x-goog-api-key, the access key ID of Bedrock's
// SigV4 authorization).
const sdkpConfig = `store: {backend: memory}
policies:
- name: sdkp
  tokens_per_minute: 500
`

// sdkpCompletion is the completion the mock writes for every call: with
// the suite's short prompt, two calls fit in the window, the third
// overshoots it and the fourth is refused.
const sdkpCompletion = 200

// The suite's prompt.
const (
	sdkpSystem = "You answer in one short sentence."
	sdkpUser   = "What is the capital of France?"
)

// sdkpNearEnd is how far the test moves tokengate's clock from labClock
// (a quarter second into 10:00:00, where every charge of the spent window
// lies) before the retried call: to 250 ms before that second leaves the
// window, so the refusal asks for a short wait.
const sdkpNearEnd = 59500 * time.Millisecond

// sdkpCase is one SDK under sdkpRun.
type sdkpCase struct {
	// key is the key the SDK sends, as tokengate reads it.
	key string
	// sentKey reads the key from a request the SDK sent, where the test
	// expects the SDK to put it.
	sentKey func(h http.Header) string
	// call makes one buffered call with a new client on base (the
	// front's URL) whose HTTP client sends through tr, the SDK's retries
	// on or off, and returns the total usage the SDK reported (prompt and
	// completion, cache included).
	call func(ctx context.Context, base string, tr *sdkpTransport, retry bool) (int64, error)
	// stream starts a streamed call, retries off, reads it to its end and
	// returns its error.
	stream func(ctx context.Context, base string, tr *sdkpTransport) error
	// wantRefused fails unless err is the SDK's own rate-limit error.
	wantRefused func(t *testing.T, step string, err error)
	// refusalHeaders, when set, checks a refusal's headers further: h is
	// the response the SDK received, spent what the window holds, and
	// wait what retry-after-ms asks for.
	refusalHeaders func(t *testing.T, step string, h http.Header, spent int64, wait time.Duration)
	// minWait is how long the SDK must wait after the refusal before its
	// retry: what it was told (retry-after-ms) or configured.
	minWait time.Duration
}

// sdkpRig is a stack on sdkpConfig with an admin API client.
type sdkpRig struct {
	*harness.Stack
	t     *testing.T
	admin adminv1.AdminServiceClient
	// rt is the transport every SDK client of the test sends through.
	rt *http.Transport
}

func startSDKP(t *testing.T) *sdkpRig {
	t.Helper()
	needBinaries(t)
	s := harness.StartStack(t, harness.StackOptions{ConfigYAML: sdkpConfig, FakeClock: labClock})
	conn, err := grpc.NewClient(s.Tokengate.Field("admin"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rt := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(rt.CloseIdleConnections)
	return &sdkpRig{Stack: s, t: t, admin: adminv1.NewAdminServiceClient(conn), rt: rt}
}

// transport records the attempts of one SDK call; advance, when not 0, is
// how far it moves tokengate's clock on the first 429.
func (r *sdkpRig) transport(advance time.Duration) *sdkpTransport {
	return &sdkpTransport{rt: sdkpReadOnlyBody{r.rt}, admin: r.Tokengate.Field("admin"), advance: advance}
}

// used is what key's window holds (charged plus held), read through the
// admin API.
func (r *sdkpRig) used(key string) int64 {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.admin.GetUsage(ctx, &adminv1.GetUsageRequest{Key: &adminv1.Key{Key: &adminv1.Key_Raw{Raw: key}}, Policy: "sdkp"})
	if err != nil || len(resp.GetUsage()) != 1 {
		r.t.Fatalf("admin GetUsage(%q): %v %v", key, resp, err)
	}
	return resp.GetUsage()[0].GetUsedTokens()
}

// wantUsed waits until key's window holds want (a settlement may land
// just after the client has its answer), failing with what it held.
func (r *sdkpRig) wantUsed(step, key string, want int64) {
	r.t.Helper()
	harness.Eventually(r.t, 5*time.Second, func() error {
		if got := r.used(key); got != want {
			return fmt.Errorf("%s: key %q holds %d in its window, want %d (what the SDK reported)", step, key, got, want)
		}
		return nil
	})
}

// metric sums tokengate's series name under the suite's policy with the
// given label pairs.
func (r *sdkpRig) metric(name string, labels ...string) int64 {
	r.t.Helper()
	v, err := harness.ScrapeMetric(rawClient, r.Tokengate.Field("admin"), name, append([]string{"policy", "sdkp"}, labels...)...)
	if err != nil {
		r.t.Fatal(err)
	}
	return int64(v)
}

// sdkpRun is the scenario: spend, then the retried call, then the
// counters of both.
func sdkpRun(t *testing.T, c sdkpCase) {
	r := startSDKP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admitted, spent := r.spend(ctx, c)
	usage := r.retried(ctx, c, spent)
	r.wantCounters(admitted+1, spent+usage)
}

// spend calls the SDK, its retries off, until tokengate refuses: every
// call answered while the window has room, each charged what the SDK
// reported; the call after the usage reached the limit refused, as the
// SDK's own rate-limit error; then a streamed call refused too. It
// returns the calls admitted and the tokens they used.
func (r *sdkpRig) spend(ctx context.Context, c sdkpCase) (admitted int, spent int64) {
	t := r.t
	var refusal sdkpAttempt
	for i := 1; ; i++ {
		step := fmt.Sprintf("spending call %d (%d of %d used)", i, spent, sdkpLimit)
		if i > 10 {
			t.Fatalf("%s: never refused", step)
		}
		tr := r.transport(0)
		usage, err := c.call(ctx, r.URL, tr, false)
		attempts := tr.get()
		if len(attempts) != 1 {
			t.Fatalf("%s: %d attempts with retries off, want 1: %v", step, len(attempts), attempts)
		}
		if got := c.sentKey(attempts[0].request); got != c.key {
			t.Errorf("%s: the SDK sent the key %q where the test reads it, want %q", step, got, c.key)
		}
		if err != nil {
			if spent < sdkpLimit {
				t.Fatalf("%s: %v (status %d), want an answer below the limit", step, err, attempts[0].status)
			}
			c.wantRefused(t, step, err)
			t.Logf("%d calls admitted for %d tokens, then refused: %v", admitted, spent, err)
			refusal = attempts[0]
			break
		}
		if spent >= sdkpLimit {
			t.Fatalf("%s: answered (usage %d), want a refusal once the window is spent", step, usage)
		}
		if usage <= 0 {
			t.Fatalf("%s: the SDK reported usage %d", step, usage)
		}
		spent += usage
		admitted++
		r.wantUsed(step, c.key, spent)
	}
	step := "refusal of the spent window"
	if refusal.status != http.StatusTooManyRequests {
		t.Errorf("%s: status %d, want 429", step, refusal.status)
	}
	// The clock reads 10:00:00.25 and every charge is in 10:00:00's
	// second, which leaves the window at 10:01:00.
	wantRetryAfter(t, step, refusal.header, 60, 59750)
	if c.refusalHeaders != nil {
		c.refusalHeaders(t, step, refusal.header, spent, 59750*time.Millisecond)
	}

	step = "streamed call on the spent window"
	tr := r.transport(0)
	err := c.stream(ctx, r.URL, tr)
	if attempts := tr.get(); len(attempts) != 1 || attempts[0].status != http.StatusTooManyRequests {
		t.Errorf("%s: attempts %v, want one 429", step, attempts)
	}
	c.wantRefused(t, step, err)
	r.wantUsed(step, c.key, spent)
	return admitted, spent
}

// retried moves the clock to just before the spent second leaves the
// window and calls the SDK with its retries on: the first attempt is
// refused, the transport moves the clock past that second before the SDK
// sees the refusal, and the SDK's own retry, the second and last
// attempt, gets the answer. Its usage must be the window's only charge.
// It returns that usage.
func (r *sdkpRig) retried(ctx context.Context, c sdkpCase, spent int64) int64 {
	t := r.t
	now := r.Advance(sdkpNearEnd)
	if want := "2026-01-05T10:00:59.75Z"; now.Format(time.RFC3339Nano) != want {
		t.Fatalf("clock %v, want %s", now, want)
	}
	step := "retried call"
	tr := r.transport(time.Second)
	usage, err := c.call(ctx, r.URL, tr, true)
	attempts := tr.get()
	if err := tr.advanceErr(); err != nil {
		t.Fatalf("%s: moving the clock on the first 429: %v", step, err)
	}
	if err != nil {
		t.Fatalf("%s: %v after attempts %v, want the SDK's retry answered", step, err, attempts)
	}
	if len(attempts) != 2 || attempts[0].status != http.StatusTooManyRequests || attempts[1].status != http.StatusOK {
		t.Fatalf("%s: attempts %v, want a 429 then a 200", step, attempts)
	}
	wantRetryAfter(t, step+", attempt 1", attempts[0].header, 1, 250)
	if c.refusalHeaders != nil {
		c.refusalHeaders(t, step+", attempt 1", attempts[0].header, spent, 250*time.Millisecond)
	}
	waited := attempts[1].sent.Sub(attempts[0].answered)
	if waited < c.minWait {
		t.Errorf("%s: the SDK retried %v after the 429, before the %v it was asked for", step, waited, c.minWait)
	}
	if usage <= 0 {
		t.Fatalf("%s: the SDK reported usage %d", step, usage)
	}
	t.Logf("retried call: attempts %v, the retry sent %v after the 429, usage %d", attempts, waited.Round(time.Millisecond), usage)
	// The spent second has left the window: it holds the retry's charge
	// alone.
	r.wantUsed(step, c.key, usage)
	return usage
}

// wantCounters checks that the admitted calls reached the mock and were
// counted once each, with the tokens the SDK reported; that the three
// refusals (spending, streamed, the retried call's first attempt) were
// counted and reached nothing; and that tokengate read every body.
func (r *sdkpRig) wantCounters(admitted int, reported int64) {
	t := r.t
	if calls, _ := r.MockCalls(); calls != admitted {
		t.Errorf("the mock answered %d calls, want %d: a refusal reached it", calls, admitted)
	}
	if got := r.metric("tokengate_requests_total", "decision", "allowed"); got != int64(admitted) {
		t.Errorf("%d requests allowed, want %d", got, admitted)
	}
	if got := r.metric("tokengate_requests_total", "decision", "rate_limited"); got != 3 {
		t.Errorf("%d requests rate limited, want 3 (spending, streamed, first attempt of the retried call)", got)
	}
	prompt := r.metric("tokengate_tokens_total", "kind", "prompt", "source", "reported")
	completion := r.metric("tokengate_tokens_total", "kind", "completion", "source", "reported")
	if prompt+completion != reported {
		t.Errorf("tokengate counted %d+%d reported tokens, the SDK reported %d", prompt, completion, reported)
	}
	// The SDKs' bodies are well formed: tokengate must read every one it
	// reads (a strict policy would refuse the rest with 400).
	for _, reason := range []string{"encoding", "json", "prompt"} {
		if got := r.metric("tokengate_unreadable_bodies_total", "reason", reason); got != 0 {
			t.Errorf("tokengate found %d of the SDK's well-formed request bodies unreadable (reason %q; its log says why)", got, reason)
		}
	}
}

// sdkpAttempt is one HTTP exchange of an SDK call.
type sdkpAttempt struct {
	status int // 0: no response
	// request holds the headers the SDK sent, header the response's.
	request, header http.Header
	// sent is when the request went out, answered when the SDK got the
	// response (after any clock move).
	sent, answered time.Time
}

func (a sdkpAttempt) String() string { return strconv.Itoa(a.status) }

// sdkpTransport is the RoundTripper of an SDK's HTTP client: it records
// every attempt, and on the first 429, when advance is set, moves
// tokengate's clock by advance before handing the refusal to the SDK, so
// the window has moved on whenever the SDK's retry goes out.
type sdkpTransport struct {
	rt      http.RoundTripper
	admin   string
	advance time.Duration

	mu       sync.Mutex
	attempts []sdkpAttempt
	advanced bool
	err      error
}

func (t *sdkpTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	a := sdkpAttempt{request: req.Header.Clone(), header: http.Header{}, sent: time.Now()}
	resp, err := t.rt.RoundTrip(req)
	t.mu.Lock()
	defer t.mu.Unlock()
	if resp != nil {
		a.status, a.header = resp.StatusCode, resp.Header.Clone()
		if resp.StatusCode == http.StatusTooManyRequests && t.advance > 0 && !t.advanced {
			t.advanced = true
			t.err = sdkpAdvance(req.Context(), t.admin, t.advance)
		}
	}
	a.answered = time.Now()
	t.attempts = append(t.attempts, a)
	return resp, err
}

func (t *sdkpTransport) get() []sdkpAttempt {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]sdkpAttempt(nil), t.attempts...)
}

func (t *sdkpTransport) advanceErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.advance > 0 && !t.advanced {
		return fmt.Errorf("no 429 seen")
	}
	return t.err
}

// sdkpAdvance moves tokengate's fake clock through its admin port. It
// reports errors rather than failing a test: it runs inside an SDK's
// HTTP client.
func sdkpAdvance(ctx context.Context, admin string, d time.Duration) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+admin+"/debug/clock?advance="+url.QueryEscape(d.String()), nil)
	if err != nil {
		return err
	}
	resp, err := rawClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("advance clock by %v: %d %q %v", d, resp.StatusCode, body, err)
	}
	return nil
}

// sdkpReadOnlyBody hides the WriteTo of the AWS SDK's request bodies, as
// internal/openaimock's readOnlyBody does, for the same race: over plain
// HTTP, net/http may write the body straight to the socket and then check
// it for extra bytes; by then the answer (a fast 429 here) has come, the
// SDK has closed the body, and smithy-go's closed body answers WriteTo
// with io.EOF as an error, on which net/http closes the connection under
// a response still being read. Read reports a closed body as a clean EOF.
// The other SDKs' bodies are plain readers: it changes nothing for them.
type sdkpReadOnlyBody struct{ rt http.RoundTripper }

func (t sdkpReadOnlyBody) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody {
		r = r.Clone(r.Context())
		r.Body = struct{ io.ReadCloser }{r.Body}
	}
	return t.rt.RoundTrip(r)
}

// sdkpBearer is the token of an authorization: Bearer header.
func sdkpBearer(h http.Header) string {
	v, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return v
}
