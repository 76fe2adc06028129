package bpe

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"unicode/utf8"
)

// benchPrompt returns size bytes of mixed, realistic prompt text, the same
// on every run: mostly English prose, then code, JSON and markdown, a chat
// transcript, other languages, logs with numbers, URLs and emoji.
func benchPrompt(size int) string {
	rng := rand.New(rand.NewPCG(8, 590))
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	var b strings.Builder
	for b.Len() < size {
		switch k := rng.IntN(100); {
		case k < 55:
			prose(&b, rng, pick)
		case k < 70:
			code(&b, rng, pick)
		case k < 78:
			data(&b, rng, pick)
		case k < 86:
			chat(&b, rng, pick)
		case k < 93:
			for range 1 + rng.IntN(3) {
				b.WriteString(pick(foreign))
				b.WriteByte(' ')
			}
			b.WriteString("\n\n")
		default:
			logs(&b, rng, pick)
		}
	}
	s := b.String()[:size]
	for !utf8.ValidString(s) { // do not end mid-rune
		s = s[:len(s)-1]
	}
	return s
}

func prose(b *strings.Builder, rng *rand.Rand, pick func([]string) string) {
	for range 2 + rng.IntN(5) {
		n := 6 + rng.IntN(18)
		for i := range n {
			w := pick(words)
			switch r := rng.IntN(40); {
			case i == 0:
				w = strings.ToUpper(w[:1]) + w[1:]
			case r == 0:
				w = pick(names)
			case r == 1:
				w = fmt.Sprint(rng.IntN(2000))
			case r == 2:
				w = "\"" + w + "\""
			case r == 3:
				w = "(" + w + ")"
			}
			b.WriteString(w)
			switch {
			case i == n-1:
				b.WriteString(pick([]string{".", ".", ".", "?", "!", ":"}))
			case rng.IntN(9) == 0:
				b.WriteString(",")
			}
			b.WriteByte(' ')
		}
	}
	b.WriteString("\n\n")
}

func code(b *strings.Builder, rng *rand.Rand, pick func([]string) string) {
	id := func() string { return pick(idents) + pick([]string{"", "Count", "ID", "_id", "Name", "s", "2", "Buf"}) }
	switch rng.IntN(3) {
	case 0:
		fmt.Fprintf(b, "```go\nfunc %s(%s string, %s int) (int, error) {\n", id(), id(), id())
		for range 2 + rng.IntN(6) {
			fmt.Fprintf(b, "\tif %s := %s(%s); %s != nil {\n\t\treturn 0, fmt.Errorf(\"%s: %%w\", err)\n\t}\n", id(), id(), id(), id(), pick(words))
		}
		fmt.Fprintf(b, "\treturn len(%s) + %d, nil\n}\n```\n\n", id(), rng.IntN(100))
	case 1:
		fmt.Fprintf(b, "```python\ndef %s(%s, %s=None):\n", id(), id(), id())
		for range 2 + rng.IntN(6) {
			fmt.Fprintf(b, "    %s = [%s for %s in range(%d) if %s %% %d == 0]  # %s %s\n", id(), id(), id(), rng.IntN(1000), id(), 1+rng.IntN(9), pick(words), pick(words))
		}
		fmt.Fprintf(b, "    return %s\n```\n\n", id())
	default:
		fmt.Fprintf(b, "const %s = async (%s) => {\n", id(), id())
		for range 2 + rng.IntN(6) {
			fmt.Fprintf(b, "  const %s = await fetch(`/api/v%d/%s/${%s}`, { method: '%s' });\n", id(), 1+rng.IntN(3), id(), id(), pick([]string{"GET", "POST", "PUT"}))
		}
		b.WriteString("};\n\n")
	}
}

func data(b *strings.Builder, rng *rand.Rand, pick func([]string) string) {
	if rng.IntN(2) == 0 {
		b.WriteString("[")
		for i := range 2 + rng.IntN(6) {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(b, `{"id": %d, "name": "%s", "score": %d.%02d, "tags": ["%s", "%s"], "active": %v}`,
				rng.IntN(1e6), pick(names), rng.IntN(100), rng.IntN(100), pick(words), pick(words), rng.IntN(2) == 0)
		}
		b.WriteString("]\n\n")
		return
	}
	b.WriteString("| Name | Value | Notes |\n|---|---:|---|\n")
	for range 2 + rng.IntN(6) {
		fmt.Fprintf(b, "| %s | %d | %s %s |\n", pick(names), rng.IntN(100000), pick(words), pick(words))
	}
	b.WriteString("\n- " + pick(words) + " " + pick(words) + "\n- **" + pick(words) + "**: " + pick(words) + "\n\n")
}

func chat(b *strings.Builder, rng *rand.Rand, pick func([]string) string) {
	for range 1 + rng.IntN(3) {
		fmt.Fprintf(b, "User: %s\nAssistant: %s %s %s, %s %s.\n", pick(questions), pick(names), pick(words), pick(words), pick(words), pick(words))
	}
	b.WriteString("\n")
}

func logs(b *strings.Builder, rng *rand.Rand, pick func([]string) string) {
	for range 2 + rng.IntN(5) {
		fmt.Fprintf(b, "2025-%02d-%02dT%02d:%02d:%02d.%03dZ %s https://api.example.com/v1/%s?id=%d latency=%dms %s\n",
			1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1000),
			pick([]string{"INFO", "WARN", "ERROR", "DEBUG"}), pick(idents), rng.IntN(1e9), rng.IntN(500), pick(emoji))
	}
	b.WriteString("\n")
}

var (
	words = strings.Fields(`the of and to a in is it you that he was for on are with as I his they be at one have this from
or had by hot word but what some we can out other were all there when up use your how said an each she which do their time
if will way about many then them write would like so these her long make thing see him two has look more day could go come
did number sound no most people my over know water than call first who may down side been now find any new work part take
get place made live where after back little only round man year came show every good me give our under name very through
just form sentence great think say help low line differ turn cause much mean before move right boy old too same tell does
set three want air well also play small end put home read hand port large spell add even land here must big high such follow
act why ask men change went light kind off need house picture try us again animal point mother world near build self earth
father head stand own page should country found answer school grow study still learn plant cover food sun four between state
keep eye never last let thought city tree cross farm hard start might story saw far sea draw left late run don't while press
close night real life few north open seem together next white children begin got walk example ease paper group always music
those both mark often letter until mile river car feet care second book carry took science eat room friend began idea fish
mountain stop once base hear horse cut sure watch color face wood main enough plain girl usual young ready above ever red
list though feel talk bird soon body dog family direct pose leave song measure door product black short numeral class wind
question happen complete ship area half rock order fire south problem piece told knew pass since top whole king space heard
best hour better true during hundred five remember step early hold west ground interest reach fast verb sing listen six table
travel less morning ten simple several vowel toward war lay against pattern slow center love person money serve appear road
map rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark machine note wait plan figure
star box noun field rest correct able pound done beauty drive stood contain front teach week final gave green oh quick develop
ocean warm free minute strong special mind behind clear tail produce fact street inch multiply nothing course stay wheel full
force blue object decide surface deep moon island foot system busy test record boat common gold possible plane stead dry wonder
laugh thousand ago ran check game shape equate miss brought heat snow tire bring yes distant fill east paint language among
it's I'm we're they've you'll she'd can't won't isn't that's there's let's tokenizer gateway latency throughput request
response budget estimate deployment configuration kubernetes envoy`)
	names     = strings.Fields("Alice Bob Carol Dave Eve Mallory O'Brien McDonald García Müller Nguyen Zhang Kowalski Dubois Rossi Tanaka OpenAI Envoy Kubernetes")
	idents    = strings.Fields("user req resp buf count total limit key token model ctx err cfg store item items value result data parsed index offset")
	questions = []string{"Can you tell me the time, please?", "What's the weather like today?", "Summarize this article in 3 bullet points.",
		"How do I reverse a linked list in Go?", "Why is my Kubernetes pod stuck in CrashLoopBackOff?", "Translate \"good morning\" to French.",
		"Write a haiku about rate limits.", "What does HTTP 429 mean?"}
	foreign = []string{"Le renard brun rapide saute par-dessus le chien paresseux.", "Der schnelle braune Fuchs springt über den faulen Hund.",
		"El rápido zorro marrón salta sobre el perro perezoso.", "Быстрая коричневая лиса прыгает через ленивую собаку.",
		"敏捷的棕色狐狸跳过了懒狗。", "素早い茶色の狐がのろまな犬を飛び越える。", "빠른 갈색 여우가 게으른 개를 뛰어넘는다.",
		"الثعلب البني السريع يقفز فوق الكلب الكسول.", "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।", "สุนัขจิ้งจอกสีน้ำตาลกระโดดข้ามสุนัขขี้เกียจ",
		"Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.", "Szybki brązowy lis przeskakuje nad leniwym psem."}
	emoji = []string{"", "", "", "✅", "⚠️", "🚀", "👍🏽", "👩‍💻", "🔥🔥"}
)
