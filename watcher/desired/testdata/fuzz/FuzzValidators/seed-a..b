go test fuzz v1
string("a..b")
