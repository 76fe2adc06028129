package server

import (
	"context"
	"crypto/subtle"
	"math"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tokengate/tokengate/extproc"
	"github.com/tokengate/tokengate/extproc/policy"
	"github.com/tokengate/tokengate/limiter"
	adminv1 "github.com/tokengate/tokengate/proto/tokengate/admin/v1"
)

// adminService serves tokengate.admin.v1 over the store and the policies
// the processor runs with, so reloads show at once.
type adminService struct {
	adminv1.UnimplementedAdminServiceServer
	proc  *extproc.Server
	store limiter.Store
	clock limiter.Clock
}

// keyHash reads a Key: a raw value is hashed at once, as the processor
// hashes it, and goes no further.
func (a *adminService) keyHash(k *adminv1.Key) (string, error) {
	switch v := k.GetKey().(type) {
	case *adminv1.Key_Raw:
		if v.Raw == "" {
			return "", status.Error(codes.InvalidArgument, "key.raw is empty")
		}
		return a.proc.HashKey(v.Raw), nil
	case *adminv1.Key_Sha256:
		h := strings.ToLower(v.Sha256)
		if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
			return "", status.Error(codes.InvalidArgument, "key.sha256 must be 64 hex digits")
		}
		return h, nil
	}
	return "", status.Error(codes.InvalidArgument, "key is required: raw or sha256")
}

// policies returns the policies a request names: one, or all.
func (a *adminService) policies(name string) ([]*policy.Policy, error) {
	ps := a.proc.Policies()
	if name == "" {
		return ps, nil
	}
	for _, p := range ps {
		if p.Name() == name {
			return []*policy.Policy{p}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no policy named %q", name)
}

// target resolves what a call names: the key, by its hash, and the
// policies (one, or all).
func (a *adminService) target(key *adminv1.Key, name string) (string, []*policy.Policy, error) {
	hash, err := a.keyHash(key)
	if err != nil {
		return "", nil, err
	}
	ps, err := a.policies(name)
	return hash, ps, err
}

func (a *adminService) GetUsage(ctx context.Context, req *adminv1.GetUsageRequest) (*adminv1.GetUsageResponse, error) {
	hash, ps, err := a.target(req.GetKey(), req.GetPolicy())
	if err != nil {
		return nil, err
	}
	resp := &adminv1.GetUsageResponse{}
	for _, p := range ps {
		u, err := a.usage(ctx, p, hash, req.GetModel())
		if err != nil {
			return nil, err
		}
		resp.Usage = append(resp.Usage, u)
	}
	return resp, nil
}

func (a *adminService) usage(ctx context.Context, p *policy.Policy, hash, model string) (*adminv1.Usage, error) {
	b := p.BudgetFor(hash, "") // the admin API knows no tier: a tiered key shows the policy's own budgets
	d, err := a.store.StatusMany(ctx, p.CounterKey(hash, model), b, a.clock.Now())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "store: %v", err)
	}
	if len(d.Limits) != len(b) {
		return nil, status.Errorf(codes.Internal, "store: %d limit states for %d limits", len(d.Limits), len(b))
	}
	meters := p.Meters()
	u := &adminv1.Usage{Policy: p.Name(), KeySha256: hash, Model: model}
	for i, l := range b {
		s := d.Limits[i]
		if hiddenWindow(l) {
			continue // kept so that a quota-only policy counts as before; not a limit
		}
		// The fields older clients read: the two shorthands.
		switch l.Name {
		case limiter.WindowLimitName:
			u.LimitTokens, u.UsedTokens, u.RemainingTokens, u.WindowReset = l.Max, s.Used, s.Remaining, durationpb.New(s.Reset)
		case limiter.QuotaLimitName:
			u.QuotaLimitTokens, u.QuotaUsedTokens = l.Max, s.Used
			u.QuotaRemainingTokens, u.QuotaReset = s.Remaining, durationpb.New(s.Reset)
		}
		lu := &adminv1.LimitUsage{Name: l.Name, Max: l.Max, Used: s.Used, Remaining: s.Remaining, ResetIn: durationpb.New(s.Reset)}
		if i < len(meters) { // Meters parallels every Budget of the policy
			lu.Unit, lu.Kind = meters[i].Unit, meters[i].Kind
		}
		if l.Window != 0 {
			lu.Span = &adminv1.LimitUsage_Window{Window: durationpb.New(l.Window)}
		} else {
			lu.Span = &adminv1.LimitUsage_Period{Period: l.Period.String()}
		}
		u.Limits = append(u.Limits, lu)
	}
	return u, nil
}

// hiddenWindow reports the tokens_per_minute window a policy without one
// still has (Limits.Budget keeps it, unlimited, so counts carry over):
// it limits nothing and is not shown.
func hiddenWindow(l limiter.Limit) bool {
	return l.Name == limiter.WindowLimitName && l.Max == math.MaxInt64
}

// fullest is the share of its budget (used/max) that the key's fullest
// limit has used: what ranks keys the window does not tell apart.
func fullest(u *adminv1.Usage) float64 {
	var f float64
	for _, l := range u.GetLimits() {
		switch {
		case l.GetMax() > 0:
			f = max(f, float64(l.GetUsed())/float64(l.GetMax()))
		case l.GetUsed() > 0:
			f = math.Inf(1) // a zero budget with something held or charged
		}
	}
	return f
}

// ListUsage lists at most limit keys, those that used the most, ordered
// by:
//
//  1. the tokens charged and held in the key's tokens_per_minute window,
//     which store.List reports with every key at no extra cost (as
//     before budgets: old clients see the same order);
//  2. then, between keys equal there, the share of its budget the key's
//     fullest limit has used (used/max, so requests, tokens and cost
//     compare): the only measure of a key whose policy has no
//     tokens_per_minute, for which List's figure is always 0;
//  3. then the policy's name and the key's hash, so that the answer is
//     stable.
//
// A key's limits are read with StatusMany, which fills its row. The keys
// whose window alone puts them in the top limit are read once each; keys
// tied with the last of them (all of a policy's keys when it has no
// window) are all read, since nothing else ranks them.
func (a *adminService) ListUsage(ctx context.Context, req *adminv1.ListUsageRequest) (*adminv1.ListUsageResponse, error) {
	ps, err := a.policies(req.GetPolicy())
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = 20
	}
	type row struct {
		p      *policy.Policy
		hash   string
		model  string
		window int64 // List's Used
		usage  *adminv1.Usage
		share  float64
	}
	var rows []row
	now := a.clock.Now()
	for _, p := range ps {
		keys, err := a.store.List(ctx, p.KeyPrefix(), now)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "store: %v", err)
		}
		for _, k := range keys {
			hash, model, ok := p.ParseCounterKey(k.Key)
			if !ok {
				continue
			}
			rows = append(rows, row{p: p, hash: hash, model: model, window: k.Used})
		}
	}
	if len(rows) == 0 {
		return &adminv1.ListUsageResponse{}, nil
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].window > rows[j].window })
	// Every row above the cut is in; rows at it compete for what is left.
	cut := rows[min(limit, len(rows))-1].window
	n := len(rows)
	for n > 0 && rows[n-1].window < cut {
		n--
	}
	rows = rows[:n]
	for i := range rows {
		r := &rows[i]
		if r.usage, err = a.usage(ctx, r.p, r.hash, r.model); err != nil {
			return nil, err
		}
		r.share = fullest(r.usage)
	}
	sort.Slice(rows, func(i, j int) bool {
		x, y := &rows[i], &rows[j]
		switch {
		case x.window != y.window:
			return x.window > y.window
		case x.share != y.share:
			return x.share > y.share
		case x.p.Name() != y.p.Name():
			return x.p.Name() < y.p.Name()
		}
		return x.usage.GetKeySha256()+":"+x.model < y.usage.GetKeySha256()+":"+y.model
	})
	resp := &adminv1.ListUsageResponse{}
	for _, r := range rows[:min(limit, len(rows))] {
		resp.Usage = append(resp.Usage, r.usage)
	}
	return resp, nil
}

func (a *adminService) ResetUsage(ctx context.Context, req *adminv1.ResetUsageRequest) (*adminv1.ResetUsageResponse, error) {
	hash, ps, err := a.target(req.GetKey(), req.GetPolicy())
	if err != nil {
		return nil, err
	}
	n := int32(0)
	for _, p := range ps {
		keys := []string{p.CounterKey(hash, req.GetModel())}
		if p.PerModel() && req.GetModel() == "" {
			// No model named: every model's budget of the key, which
			// is what resetting a key means.
			prefix := p.CounterKey(hash, "")
			listed, err := a.store.List(ctx, prefix, a.clock.Now())
			if err != nil {
				return nil, status.Errorf(codes.Unavailable, "store: %v", err)
			}
			for _, k := range listed {
				if k.Key != prefix {
					keys = append(keys, k.Key)
				}
			}
		}
		for _, k := range keys {
			if err := a.store.Reset(ctx, k); err != nil {
				return nil, status.Errorf(codes.Unavailable, "store: %v", err)
			}
			n++
		}
	}
	return &adminv1.ResetUsageResponse{CountersReset: n}, nil
}

// bearerAuth refuses calls without the admin token, compared in constant
// time so the comparison leaks nothing of the token. No token configured:
// every call passes (the admin listener is loopback by default).
func bearerAuth(token string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		if token != "" {
			got := ""
			if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("authorization")) > 0 {
				if v, ok := strings.CutPrefix(md.Get("authorization")[0], "Bearer "); ok {
					got = v
				}
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				return nil, status.Error(codes.Unauthenticated, "admin API: missing or wrong bearer token")
			}
		}
		return next(ctx, req)
	}
}
