// Package extproc is tokengate's Envoy external processor: one processor per
// HTTP request, phase by phase, counting tokens against the limiter.
package extproc

import (
	"cmp"
	"errors"
	"io"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokengate/tokengate/extproc/decode"
	"github.com/tokengate/tokengate/extproc/policy"
	"github.com/tokengate/tokengate/limiter"
)

// Namespace is the dynamic metadata namespace tokengate writes, which
// Envoy's filter config must list in receiving_namespaces.
const Namespace = "tokengate"

// Options wires a Server.
type Options struct {
	Policies []*policy.Policy
	Store    limiter.Store
	Clock    limiter.Clock
	Log      *zap.Logger
	Metrics  *Metrics // nil: no metrics
	// StoreErrors, when set, hears of every store call that failed a
	// request (op reserve or settle); the server counts them.
	StoreErrors func(op string, err error)
	// EstimateBudget bounds one prompt estimate (0: no bound).
	EstimateBudget time.Duration
	// KeySalt, when set, keys the hash of subscription keys (HMAC).
	KeySalt []byte
	// MaxDecoded bounds the bytes that compressed request bodies inflate
	// to, all those being read at once together (0: 64 MiB, the default
	// max_receive_bytes, which bounds a body sent as it is).
	MaxDecoded int64
}

// Server implements Envoy's ExternalProcessor service.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	policies atomic.Pointer[[]*policy.Policy]
	store    limiter.Store
	clock    limiter.Clock
	log      *zap.Logger
	metrics  *Metrics
	storeErr func(op string, err error)
	budget   time.Duration
	salt     []byte
	decoding *decode.Budget
}

// New returns a Server; a nil clock is the wall clock, a nil log discards.
func New(o Options) *Server {
	s := &Server{store: o.Store, clock: o.Clock, log: o.Log, metrics: o.Metrics, storeErr: o.StoreErrors, budget: o.EstimateBudget, salt: o.KeySalt,
		decoding: decode.NewBudget(cmp.Or(o.MaxDecoded, 64<<20))}
	if s.clock == nil {
		s.clock = limiter.SystemClock{}
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.SetPolicies(o.Policies)
	return s
}

// SetPolicies swaps the policies for requests that start from now on;
// requests in flight keep the policy they matched.
func (s *Server) SetPolicies(p []*policy.Policy) {
	p = append([]*policy.Policy(nil), p...)
	s.policies.Store(&p)
}

func (s *Server) storeError(op string, err error) {
	if s.storeErr != nil {
		s.storeErr(op, err)
	}
}

// HashKey hashes a subscription key as this server stores it.
func (s *Server) HashKey(key string) string { return HashKey(s.salt, key) }

// Policies returns the policies new requests are matched against.
func (s *Server) Policies() []*policy.Policy { return *s.policies.Load() }

// Process serves one HTTP request's stream. Whatever way the stream ends,
// the request's reservation is settled exactly once.
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	p := &processor{s: s, ctx: stream.Context()}
	defer p.finish()
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		}
		start := time.Now()
		resp := p.handle(req)
		s.metrics.observe(phaseOf(req), start)
		if resp == nil {
			return status.Errorf(codes.InvalidArgument, "tokengate: unexpected ext_proc message %T", req.Request)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// match returns the first policy for the path and model; model may be empty
// while the body is unread, and then policies restricted to models wait.
func (s *Server) match(path, model string) *policy.Policy {
	for _, p := range *s.policies.Load() {
		if p.MatchesPath(path) && p.MatchesModel(model) {
			return p
		}
	}
	return nil
}

// modelPolicy is the first policy restricted to models that matches
// path, nil when none does: a request on it whose model is not known
// before its body waits for the body to pick its policy.
func (s *Server) modelPolicy(path string) *policy.Policy {
	for _, p := range *s.policies.Load() {
		if p.HasModels() && p.MatchesPath(path) {
			return p
		}
	}
	return nil
}

// phase numbers the ext_proc message kinds for the latency histogram.
type phase int

const (
	phaseRequestHeaders phase = iota
	phaseRequestBody
	phaseResponseHeaders
	phaseResponseBody
	phaseOther
	numPhases
)

var phaseNames = [numPhases]string{"request_headers", "request_body", "response_headers", "response_body", "other"}

func phaseOf(req *extprocv3.ProcessingRequest) phase {
	switch req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return phaseRequestHeaders
	case *extprocv3.ProcessingRequest_RequestBody:
		return phaseRequestBody
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return phaseResponseHeaders
	case *extprocv3.ProcessingRequest_ResponseBody:
		return phaseResponseBody
	}
	return phaseOther
}
