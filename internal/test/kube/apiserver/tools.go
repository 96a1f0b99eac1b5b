//go:build tools

// Package apiserver pins kube-apiserver as a dependency of this wrapper module.
package apiserver

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
