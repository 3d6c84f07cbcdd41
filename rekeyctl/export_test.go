package rekeyctl

// Golden is golden for the external tests (testdata/, -update).
var Golden = golden
