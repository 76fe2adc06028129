package server

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tokengate/tokengate/extproc"
	adminv1 "github.com/tokengate/tokengate/proto/tokengate/admin/v1"
)

// charge plays one counted request whose upstream reports total tokens.
func charge(t *testing.T, addr, key string, total int) {
	t.Helper()
	stream := openStream(t, addr)
	hv := func(kv ...string) *corev3.HeaderMap {
		m := &corev3.HeaderMap{}
		for i := 0; i < len(kv); i += 2 {
			m.Headers = append(m.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		return m
	}
	msgs := []*extprocv3.ProcessingRequest{
		{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: hv(":method", "POST", ":path", "/v1/chat/completions", "api-key", key)}}},
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{
			Body: []byte(`{"model":"gpt-4o","messages":[]}`), EndOfStream: true}}},
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: hv(":status", "200")}}},
		{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{
			Body: []byte(fmt.Sprintf(`{"usage":{"prompt_tokens":%d,"completion_tokens":0,"total_tokens":%d}}`, total, total)), EndOfStream: true}}},
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	stream.CloseSend()
}

func adminClient(t *testing.T, addr string) adminv1.AdminServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return adminv1.NewAdminServiceClient(conn)
}

func TestAdminAPI(t *testing.T) {
	t.Setenv("TG_TEST_ADMIN_TOKEN", "s3cret-admin")
	r := startRun(t, `admin: {token_env: TG_TEST_ADMIN_TOKEN}
store: {backend: memory}
policies:
- {name: p, tokens_per_minute: 1000, token_quota: 5000, token_quota_period: monthly, counter_key: {header: [api-key]}}
`)
	const secret = "sk-raw-secret-value"
	charge(t, r.grpc, secret, 120)
	charge(t, r.grpc, secret, 30)
	charge(t, r.grpc, "other-key", 400)
	c := adminClient(t, r.admin)
	authed := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer s3cret-admin")
	raw := &adminv1.Key{Key: &adminv1.Key_Raw{Raw: secret}}

	for name, ctx := range map[string]context.Context{
		"no token":    context.Background(),
		"wrong token": metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer s3cret-admiN"),
		"no Bearer":   metadata.AppendToOutgoingContext(context.Background(), "authorization", "s3cret-admin"),
	} {
		if _, err := c.GetUsage(ctx, &adminv1.GetUsageRequest{Key: raw}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v, want Unauthenticated", name, err)
		}
	}

	got, err := c.GetUsage(authed, &adminv1.GetUsageRequest{Key: raw})
	if err != nil {
		t.Fatal(err)
	}
	u := got.GetUsage()[0]
	if u.GetUsedTokens() != 150 || u.GetRemainingTokens() != 850 || u.GetQuotaUsedTokens() != 150 || u.GetKeySha256() != extproc.HashKey(nil, secret) {
		t.Errorf("GetUsage = %v", u)
	}
	byHash, err := c.GetUsage(authed, &adminv1.GetUsageRequest{Key: &adminv1.Key{Key: &adminv1.Key_Sha256{Sha256: strings.ToUpper(extproc.HashKey(nil, secret))}}, Policy: "p"})
	if err != nil || byHash.GetUsage()[0].GetUsedTokens() != 150 {
		t.Errorf("by hash: %v %v", byHash, err)
	}

	list, err := c.ListUsage(authed, &adminv1.ListUsageRequest{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetUsage()) != 1 || list.GetUsage()[0].GetKeySha256() != extproc.HashKey(nil, "other-key") || list.GetUsage()[0].GetUsedTokens() != 400 {
		t.Errorf("ListUsage top 1 = %v, want other-key's 400", list)
	}

	if res, err := c.ResetUsage(authed, &adminv1.ResetUsageRequest{Key: raw}); err != nil || res.GetCountersReset() != 1 {
		t.Fatalf("ResetUsage: %v %v", res, err)
	}
	if after, _ := c.GetUsage(authed, &adminv1.GetUsageRequest{Key: raw}); after.GetUsage()[0].GetUsedTokens() != 0 || after.GetUsage()[0].GetQuotaUsedTokens() != 0 {
		t.Errorf("after reset: %v", after)
	}
	if _, err := c.GetUsage(authed, &adminv1.GetUsageRequest{Key: raw, Policy: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown policy: %v", err)
	}

	// The CLI, with the token from its environment; the raw key never
	// comes back in what it prints.
	var out, errOut bytes.Buffer
	t.Setenv("TOKENGATE_ADMIN_TOKEN", "s3cret-admin")
	charge(t, r.grpc, secret, 7)
	if err := Run(context.Background(), []string{"admin", "usage", "--addr", r.admin, "--key", secret}, &out, &errOut); err != nil {
		t.Fatalf("tokengate admin usage: %v (%s)", err, errOut.String())
	}
	var printed adminv1.GetUsageResponse
	if err := protojson.Unmarshal(out.Bytes(), &printed); err != nil || len(printed.GetUsage()) != 1 || printed.GetUsage()[0].GetUsedTokens() != 7 {
		t.Errorf("admin usage printed (%v):\n%s", err, out.String())
	}
	if strings.Contains(out.String(), secret) {
		t.Errorf("admin usage printed the raw key:\n%s", out.String())
	}
	t.Setenv("TOKENGATE_ADMIN_TOKEN", "wrong")
	if err := Run(context.Background(), []string{"admin", "list", "--addr", r.admin}, &out, &errOut); status.Code(errorsCause(err)) != codes.Unauthenticated {
		t.Errorf("admin list with a wrong token: %v", err)
	}
}

// errorsCause unwraps to the gRPC status error.
func errorsCause(err error) error {
	for err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
	return nil
}

// TestReflection lists the services each port offers, as grpcurl would.
func TestReflection(t *testing.T) {
	r := startRun(t, "store: {backend: memory}\npolicies:\n- {name: p, tokens_per_minute: 10}\n")
	for addr, want := range map[string][]string{
		r.grpc:  {"envoy.service.ext_proc.v3.ExternalProcessor", "grpc.health.v1.Health"},
		r.admin: {"tokengate.admin.v1.AdminService"},
	} {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := grpc_reflection_v1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&grpc_reflection_v1.ServerReflectionRequest{
			MessageRequest: &grpc_reflection_v1.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		for _, w := range want {
			if !strings.Contains(strings.Join(names, " "), w) {
				t.Errorf("%s lists %v, want %s", addr, names, w)
			}
		}
	}
}

// TestResetPerModelKey: resetting a key of a per_model policy without
// naming a model resets every model's budget of the key; naming one
// resets that one alone.
func TestResetPerModelKey(t *testing.T) {
	r := startRun(t, `store: {backend: memory}
policies:
- {name: p, tokens_per_minute: 1000, counter_key: {header: [api-key], per_model: true}}
`)
	c := adminClient(t, r.admin)
	ctx := context.Background()
	key := &adminv1.Key{Key: &adminv1.Key_Raw{Raw: "k"}}
	used := func() int64 {
		u, err := c.GetUsage(ctx, &adminv1.GetUsageRequest{Key: key, Policy: "p", Model: "gpt-4o"})
		if err != nil {
			t.Fatal(err)
		}
		return u.GetUsage()[0].GetUsedTokens()
	}
	charge(t, r.grpc, "k", 120) // model gpt-4o
	if _, err := c.ResetUsage(ctx, &adminv1.ResetUsageRequest{Key: key, Policy: "p", Model: "gpt-4o-mini"}); err != nil {
		t.Fatal(err)
	}
	if got := used(); got != 120 {
		t.Fatalf("after resetting gpt-4o-mini, gpt-4o holds %d, want 120", got)
	}
	resp, err := c.ResetUsage(ctx, &adminv1.ResetUsageRequest{Key: key, Policy: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if got := used(); got != 0 || resp.GetCountersReset() < 2 {
		t.Errorf("after resetting the key (%d counters), gpt-4o holds %d, want 0", resp.GetCountersReset(), got)
	}
}
