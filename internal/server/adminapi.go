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
	u := &adminv1.Usage{Policy: p.Name(), KeySha256: hash, Model: model}
	for i, l := range b {
		s := d.Limits[i]
		switch {
		case l.Name == limiter.WindowLimitName && l.Max != math.MaxInt64:
			u.LimitTokens, u.UsedTokens, u.RemainingTokens, u.WindowReset = l.Max, s.Used, s.Remaining, durationpb.New(s.Reset)
		case l.Name == limiter.QuotaLimitName:
			u.QuotaLimitTokens, u.QuotaUsedTokens = l.Max, s.Used
			u.QuotaRemainingTokens, u.QuotaReset = s.Remaining, durationpb.New(s.Reset)
		}
	}
	return u, nil
}

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
		p     *policy.Policy
		usage limiter.KeyUsage
	}
	var rows []row
	now := a.clock.Now()
	for _, p := range ps {
		keys, err := a.store.List(ctx, p.KeyPrefix(), now)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "store: %v", err)
		}
		for _, k := range keys {
			rows = append(rows, row{p, k})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].usage.Used > rows[j].usage.Used })
	resp := &adminv1.ListUsageResponse{}
	for _, r := range rows[:min(limit, len(rows))] {
		hash, model, ok := r.p.ParseCounterKey(r.usage.Key)
		if !ok {
			continue
		}
		u, err := a.usage(ctx, r.p, hash, model)
		if err != nil {
			return nil, err
		}
		resp.Usage = append(resp.Usage, u)
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
		if err := a.store.Reset(ctx, p.CounterKey(hash, req.GetModel())); err != nil {
			return nil, status.Errorf(codes.Unavailable, "store: %v", err)
		}
		n++
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
