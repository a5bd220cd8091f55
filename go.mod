module github.com/kubeftp/kubeftp-edge

go 1.25
