// Command etcd is etcd's own server entry point, built in the same module as kube-apiserver so
// both share one pinned dependency set.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
