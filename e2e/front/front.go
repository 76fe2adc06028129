// Package front is a test stand-in for Envoy in front of tokengate. It is an
// HTTP reverse proxy that, for each request, opens one ext_proc Process
// stream and follows the ext_proc filter configuration (read from
// envoy/envoy.yaml by the tests) the way Envoy's ext_proc filter does:
// which messages are sent in which processing mode, how header and body
// mutations, immediate responses, mode overrides, dynamic metadata, message
// timeouts and stream failures are handled, and what the client sees.
//
// Like Envoy's listener (codec_type: AUTO) it serves HTTP/1.1 and HTTP/2
// over cleartext, and carries trailers as Envoy's codecs do. Bodies are
// read as they arrive, whatever the processor is doing, so what arrived
// during a round trip is there when the reply comes: a BUFFERED body
// ending in trailers goes without end_of_stream, STREAMED chunks are
// pipelined. Where ext_proc changed between Envoy releases (forwarded
// metadata and attributes, local replies, protocol_config, when the stream
// is closed) it follows Config.Envoy. What runs before ext_proc is
// imitated as far as ext_proc sees it: the connection manager's client
// address and x-forwarded-for, a jwt_authn filter, and through
// Config.DynamicMetadata the dynamic metadata of any other filter.
// ENVOY.md lists every behaviour imitated, the Envoy code it follows, the
// releases it holds for, and the test that checks it.
//
// It exists so the end-to-end tests exercise tokengate through the same
// protocol Envoy speaks without needing an Envoy binary. Where the front
// cannot imitate a setting faithfully (full-duplex body modes, attributes
// it cannot evaluate, forwarding rules...), New refuses the configuration
// instead of quietly doing something else.
package front

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
)

// DefaultMessageTimeout is Envoy's message_timeout when the filter sets none.
const DefaultMessageTimeout = 200 * time.Millisecond

// remoteCloseTimeout is how long a graceful close (Config.GracefulClose)
// waits, after the half-close, for the processor to end its side before
// the stream is reset: Envoy's runtime value
// envoy.filters.http.ext_proc.remote_close_timeout_milliseconds, 1000 by
// default. A processor that needs longer is reported through
// RequestStats.StreamLeftOpen.
const remoteCloseTimeout = time.Second

// defaultBufferLimit is Envoy's per-connection buffer limit when none is
// configured (1 MiB); it bounds the STREAMED chunk queue when
// Config.BufferLimit is zero.
const defaultBufferLimit = 1 << 20

// Config says what to imitate and where the pieces are.
type Config struct {
	// Filter is the ext_proc filter configuration, as Envoy would load it.
	Filter *extprocv3.ExternalProcessor
	// ExtProcAddr is the processor's gRPC address (host:port), standing in
	// for the filter's grpc_service cluster.
	ExtProcAddr string
	// Upstream is the base URL requests are forwarded to, standing in for
	// the route's cluster.
	Upstream string
	// BufferLimit caps a buffered body like Envoy's per-connection buffer
	// limit: a larger request gets 413, a larger response 500. Zero means
	// no cap. It also bounds the queue of STREAMED chunks awaiting replies
	// (Envoy's default 1 MiB when zero), past which reading pauses.
	BufferLimit int64
	// Envoy is the release line imitated where ext_proc changed between
	// releases (see EnvoyVersion and ENVOY.md); the zero value is the line
	// docker-compose.yaml pins.
	Envoy EnvoyVersion
	// GracefulClose imitates the runtime guard
	// envoy.reloadable_features.ext_proc_graceful_grpc_close (1.34 on, off
	// by default): the stream is half-closed and the processor's end
	// awaited (up to one second) before the reset, instead of the reset
	// following the half-close at once.
	GracefulClose bool
	// RouteTimeout is the route's timeout: when the upstream has not
	// answered in full that long after the request was sent, the router
	// answers 504 (before the response headers) or resets the response.
	// Zero means none.
	RouteTimeout time.Duration
	// DownstreamHTTP1Trailers is the connection manager's
	// http_protocol_options.enable_trailers: without it Envoy drops the
	// trailers of an HTTP/1.1 chunked request (HTTP/2 trailers always
	// count).
	DownstreamHTTP1Trailers bool
	// UpstreamHTTP1Trailers is the upstream cluster's
	// http_protocol_options.enable_trailers: without it Envoy drops the
	// trailers of the upstream's HTTP/1.1 chunked response.
	UpstreamHTTP1Trailers bool
	// UseRemoteAddress, XFFNumTrustedHops and SkipXFFAppend are the
	// connection manager's use_remote_address, xff_num_trusted_hops and
	// skip_xff_append (Config.FromConnectionManager reads them): the
	// address it trusts as the client's (the source.address attribute),
	// and whether it appends the peer to x-forwarded-for. The zero values
	// are Envoy's defaults.
	UseRemoteAddress  bool
	XFFNumTrustedHops uint32
	SkipXFFAppend     bool
	// JWTAuthn is the configuration of a jwt_authn filter that runs
	// before ext_proc (nil: none). The front imitates its effect: the
	// bearer token checked (its signature too when the provider has an
	// inline local_jwks), Envoy's 401 on failure, the payload in the
	// dynamic metadata namespace envoy.filters.http.jwt_authn under
	// payload_in_metadata. ENVOY.md says what is left out.
	JWTAuthn *jwtauthnv3.JwtAuthentication
	// DynamicMetadata stands in for the HTTP filters before ext_proc that
	// write dynamic metadata, such as ext_authz (jwt_authn is imitated
	// from JWTAuthn): called once per request, after jwt_authn passed
	// it, its namespaces are merged into the request's dynamic metadata
	// (untyped ones field by field over jwt_authn's), which
	// metadata_options.forwarding_namespaces forwards. nil returns are
	// fine.
	DynamicMetadata func(r *http.Request) *corev3.Metadata
	// OnRequest, when set, is called with each request's record once the
	// request is finished (after the ext_proc stream is closed).
	OnRequest func(RequestStats)
	// OnMetadata, when set, is called at the end of each request with the
	// dynamic metadata Envoy would have kept (nil when none).
	OnMetadata func(*structpb.Struct)
	// OnReply, when set, is called from the request's goroutine each time
	// a reply comes in for the message it answers, so a test can act at a
	// given point of the exchange (send the rest of a body once the
	// headers are answered: it then arrives after the reply, as far as
	// the front is concerned).
	OnReply func(ReplyEvent)

	// headersApplied, set by this package's tests only, is called when a
	// headers reply comes in, before the front looks at what of the body
	// has arrived, so a test can decide what "arrived during the round
	// trip" means.
	headersApplied func(p phase, src *bodySource)
}

// ReplyEvent says which reply was just applied, for which request.
type ReplyEvent struct {
	// Header is the client's request header (do not modify it).
	Header http.Header
	// Phase is the message answered: "request_headers", "response_body"...
	Phase string
}

// BodyMessage is one body message sent to the processor.
type BodyMessage struct {
	Phase       string // "request_body" or "response_body"
	Bytes       int
	EndOfStream bool
}

// RequestStats is what happened to one HTTP request, for tests to check.
type RequestStats struct {
	Method, Path string
	// Proto is the client's protocol: "HTTP/1.1" or "HTTP/2.0".
	Proto string
	// Envoy is the release line the front imitated.
	Envoy EnvoyVersion
	// RequestID is the client's x-request-id, if it sent one.
	RequestID string
	// Status is what the client was answered; 0 when nothing was sent.
	Status int
	// Sent lists the ext_proc messages sent, in order: "request_headers",
	// "request_body", "request_trailers", "response_headers",
	// "response_body", "response_trailers".
	Sent []string
	// Bodies details the body messages of Sent, in order.
	Bodies []BodyMessage
	// MaxInFlight is the most STREAMED body messages that awaited their
	// replies at once: above 1, chunks were pipelined.
	MaxInFlight int
	// RequestTrailers and ResponseTrailers are set when the body ended in
	// trailers that Envoy would have kept.
	RequestTrailers, ResponseTrailers bool
	// RouterReply is set when the router answered by itself (the upstream
	// could not be reached or reset before its headers, the route timed
	// out, the request was over the buffer limit): its response code
	// details. LocalReplyProcessed says whether that reply went through
	// the processor, which depends on Envoy.
	RouterReply         string
	LocalReplyProcessed bool
	// ClosedEarly is set when the stream was closed right after the last
	// reply needed (1.37 on) rather than at the end of the request.
	ClosedEarly bool
	// Received counts ProcessingResponse messages read for this request.
	Received int
	// Immediate is set when the processor answered with immediate_response,
	// in reply to the message named by ImmediatePhase.
	Immediate      bool
	ImmediatePhase string
	// LocalReply is set when the front answered the client itself (an
	// immediate response or an ext_proc failure); Details then says why,
	// in Envoy's response-code-details words.
	LocalReply bool
	Details    string
	// UpstreamCalled is set once the request was sent to the upstream.
	UpstreamCalled bool
	UpstreamError  string
	// ModeOverrides counts honoured mode_override fields; IgnoredModeOverrides
	// those Envoy would ignore (not allowed, or not in a headers reply).
	ModeOverrides        int
	IgnoredModeOverrides int
	// RejectedMutations counts header mutations the mutation rules refused.
	RejectedMutations int
	// ValueFieldHeaders counts set_headers entries that used value instead
	// of raw_value; current Envoy reads raw_value only.
	ValueFieldHeaders int
	// IgnoredAppendActions counts set_headers entries whose append_action
	// asked for something else than what Envoy did: Envoy's ext_proc reads
	// only the deprecated append field (false when unset: overwrite).
	IgnoredAppendActions int
	// DroppedMetadata lists dynamic metadata namespaces that were not in
	// receiving_namespaces and so were discarded.
	DroppedMetadata []string
	// Spurious counts replies that did not answer the message awaited.
	Spurious int
	// TimedOut is set when a reply missed message_timeout.
	TimedOut bool
	// GRPCError is the stream's error status, if it failed.
	GRPCError string
	// FailedOpen is set when ext_proc failed and failure_mode_allow let the
	// request go on unprocessed.
	FailedOpen bool
	// ClosedByProcessor is set when the processor ended the stream (OK
	// status) before the front was done; Envoy then carries on unprocessed.
	ClosedByProcessor bool
	// ClientGone is set when the client disconnected before the end.
	ClientGone bool
	// Aborted is set when the response had to be cut after its headers
	// were sent, as Envoy resets a stream it can no longer answer.
	Aborted bool
	// StreamLeftOpen is set, under GracefulClose only, when the processor
	// did not end the stream within the remote close timeout after the
	// front closed its side.
	StreamLeftOpen bool
	// Metadata is the dynamic metadata kept: one field per namespace.
	Metadata *structpb.Struct
}

// Messages is the number of ext_proc messages sent for the request.
func (s RequestStats) Messages() int { return len(s.Sent) }

// Front is an Envoy-like HTTP front. It is safe for concurrent use.
type Front struct {
	cfg           Config
	filter        *extprocv3.ExternalProcessor
	req, resp     dirMode
	timeout       time.Duration
	maxTimeout    time.Duration
	statusOnError int
	receiving     map[string]bool
	// fwdUntyped and fwdTyped are forwarding_namespaces; reqAttrs and
	// respAttrs request_attributes and response_attributes.
	fwdUntyped, fwdTyped []string
	reqAttrs, respAttrs  []attribute
	jwt                  *jwtAuthn
	checker              *checker
	initialMD            metadata.MD
	upstream             string

	conn   *grpc.ClientConn
	client extprocsvc.ExternalProcessorClient
	http   *http.Client

	mu      sync.Mutex
	done    []RequestStats
	changed chan struct{} // closed and replaced whenever done grows
	srv     *http.Server
}

// New checks cfg and prepares the front; no connection is made until the
// first request, as Envoy connects lazily too.
func New(cfg Config) (*Front, error) {
	f := &Front{cfg: cfg, filter: cfg.Filter, changed: make(chan struct{})}
	if err := f.configure(); err != nil {
		return nil, fmt.Errorf("front: %w", err)
	}
	conn, err := grpc.NewClient(cfg.ExtProcAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Envoy's gRPC client has no message size cap of its own; a large
		// body mutation must not fail here when it would pass Envoy.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)))
	if err != nil {
		return nil, fmt.Errorf("front: ext_proc client: %w", err)
	}
	f.conn = conn
	f.client = extprocsvc.NewExternalProcessorClient(conn)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil               // the upstream is always local; ignore HTTP_PROXY
	tr.DisableCompression = true // pass content-encoding through, as Envoy does
	tr.MaxIdleConnsPerHost = 64
	f.http = &http.Client{
		Transport: tr,
		// A proxy hands redirects to the client instead of following them.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return f, nil
}

// Start serves the front on addr ("127.0.0.1:0" picks a port) and returns
// its base URL.
func (f *Front) Start(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("front: %w", err)
	}
	// Envoy's listener (codec_type: AUTO) serves HTTP/1.1 and HTTP/2
	// with prior knowledge (h2c) on the same port.
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second, Protocols: protocols}
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), nil
}

// Close stops serving, cutting open requests, and closes the connections
// to the processor and the upstream.
func (f *Front) Close() error {
	f.mu.Lock()
	srv := f.srv
	f.mu.Unlock()
	var errs []error
	if srv != nil {
		errs = append(errs, srv.Close())
	}
	errs = append(errs, f.conn.Close())
	f.http.CloseIdleConnections()
	return errors.Join(errs...)
}

// ServeHTTP handles one request: one ext_proc stream, one upstream call.
func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := newExchange(f, w, r)
	// Deferred so the record is kept even when the response is aborted
	// with http.ErrAbortHandler.
	defer f.finished(x)
	x.run()
}

func (f *Front) finished(x *exchange) {
	x.finish()
	st := x.st
	f.mu.Lock()
	f.done = append(f.done, st)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	if f.cfg.OnMetadata != nil {
		f.cfg.OnMetadata(st.Metadata)
	}
	if f.cfg.OnRequest != nil {
		f.cfg.OnRequest(st)
	}
}

// Completed returns the records of every finished request, oldest first.
func (f *Front) Completed() []RequestStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]RequestStats(nil), f.done...)
}

// WaitCompleted waits until at least n requests have finished and returns
// their records. A client can read a whole response before the front has
// closed the ext_proc stream, so tests wait here instead of sleeping.
func (f *Front) WaitCompleted(n int, timeout time.Duration) ([]RequestStats, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		if len(f.done) >= n {
			out := append([]RequestStats(nil), f.done...)
			f.mu.Unlock()
			return out, nil
		}
		changed := f.changed
		got := len(f.done)
		f.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return nil, fmt.Errorf("front: %d of %d requests finished after %v", got, n, timeout)
		}
	}
}

// Last returns the record of the most recently finished request.
func (f *Front) Last() (RequestStats, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.done) == 0 {
		return RequestStats{}, false
	}
	return f.done[len(f.done)-1], true
}

// LastMetadata returns the dynamic metadata kept for the most recently
// finished request, or nil.
func (f *Front) LastMetadata() *structpb.Struct {
	st, _ := f.Last()
	return st.Metadata
}

// streamContext is the context of one ext_proc stream: the HTTP request's,
// so a client that goes away resets the stream as Envoy does, plus the
// grpc_service's initial metadata.
func (f *Front) streamContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	if len(f.initialMD) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, f.initialMD)
	}
	return ctx, cancel
}

func parseUpstream(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("upstream %q is not an absolute URL", s)
	}
	return s, nil
}
