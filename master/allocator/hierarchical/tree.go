package hierarchical

import (
	"slices"
	"strings"
)

// node is a role in the role tree of one allocation run (Mesos's
// hierarchical roles, docs/roles.md): role "eng/web" is the child "web" of
// "eng", and its allocation counts toward eng's share, so eng's subtree as a
// whole is weighed against eng's siblings, and "eng/web" against its own. A
// role that has frameworks and child roles, like "eng" beside "eng/web",
// holds its own frameworks in a virtual leaf child "eng/." with eng's
// weight, as Mesos's sorter does. Flat roles are a tree of depth one.
type node struct {
	path     string
	role     *role   // leaf: the role whose frameworks it offers to
	parent   *node   // nil at the root
	children []*node // children with an eligible framework, by share
	alloc    scalars // the subtree's allocation
	count    int     // offers made in the subtree
	weight   float64
	share    float64 // dominant share of alloc / weight
}

func (n *node) less(o *node) bool {
	return less(n.share, o.share, n.count, o.count, n.path, o.path)
}

// roleTree builds the role tree of all roles, with shares, keeping only the
// branches that lead to an eligible framework, every level sorted.
func (a *Allocator) roleTree() *node {
	root := &node{weight: 1}
	nodes := map[string]*node{}
	var get func(path string) *node
	get = func(path string) *node {
		if n, ok := nodes[path]; ok {
			return n
		}
		parent := root
		if i := strings.LastIndexByte(path, '/'); i >= 0 {
			parent = get(path[:i])
		}
		n := &node{path: path, parent: parent, weight: a.weight(path)}
		parent.children = append(parent.children, n)
		nodes[path] = n
		return n
	}
	for _, r := range a.roles {
		n := get(r.name)
		n.role = r
		for p := n; p != root; p = p.parent {
			p.alloc = p.alloc.add(r.alloc)
			p.count += r.count
		}
	}
	a.prune(root)
	return root
}

// prune moves the frameworks of roles with children to virtual leaves,
// drops branches with no eligible framework, computes shares and sorts each
// level; it reports whether n has an eligible framework.
func (a *Allocator) prune(n *node) bool {
	if n.role != nil && len(n.children) > 0 {
		v := &node{path: n.path + "/.", role: n.role, parent: n, alloc: n.role.alloc, count: n.role.count, weight: n.weight}
		n.children = append(n.children, v)
		n.role = nil
	}
	if n.role != nil {
		n.share = dominantShare(n.alloc, a.total) / n.weight
		return a.clientOrder(n.role)
	}
	kept := n.children[:0]
	for _, c := range n.children {
		if a.prune(c) {
			kept = append(kept, c)
		}
	}
	n.children = kept
	n.share = dominantShare(n.alloc, a.total) / n.weight
	slices.SortFunc(n.children, func(x, y *node) int { return boolCmp(x.less(y), y.less(x)) })
	return len(kept) > 0
}

// charge adds s, just offered in leaf n's role, to n and its ancestors and
// moves each to its new place among its siblings.
func (a *Allocator) charge(n *node, s scalars) {
	for ; n.parent != nil; n = n.parent {
		n.alloc = n.alloc.add(s)
		n.count++
		n.share = dominantShare(n.alloc, a.total) / n.weight
		sink(n.parent.children, slices.Index(n.parent.children, n))
	}
}
