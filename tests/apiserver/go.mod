module lbtest/apiserver

go 1.24
