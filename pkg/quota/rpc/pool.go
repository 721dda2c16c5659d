package rpc

import (
	"sync"

	"github.com/paddock-csi/paddock/pkg/quota"
)

// Pool keeps one client per agent address for the controller: classes name their agent, and every
// volume of a class reaches it through the same connection.
type Pool struct {
	creds *Credentials
	mu    sync.Mutex
	conns map[string]*Client
}

// NewPool makes a pool whose clients present creds.
func NewPool(creds *Credentials) *Pool { return &Pool{creds: creds, conns: map[string]*Client{}} }

// Get returns the client of the agent at addr (host:port), dialling it on first use (lazily: an agent
// that is down fails the calls, not Get).
func (p *Pool) Get(addr string) (quota.Quotas, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := Dial(addr, p.creds)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return c, nil
}

// Close closes every client.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, c := range p.conns {
		c.Close()
		delete(p.conns, addr)
	}
}
