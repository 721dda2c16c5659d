// Package api is the quota agent's gRPC API, generated from quota.proto by `make proto` (the
// generated code is committed). Package rpc serves and calls it; nothing else should need it.
package api
